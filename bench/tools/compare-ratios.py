#!/usr/bin/env python3
"""Compares the `ratio` of each metric between two bench result files (A, then B).

Prints the mean of the ratios both files have, how many moved by more than
--swing (B lower / higher), and each of those, so an A/B of two builds run in
one call on one box reads as drift or regression.

    python3 bench/tools/compare-ratios.py A.json B.json [--swing 0.03]
"""
import argparse
import json
import statistics


def ratios(path):
    d = json.load(open(path))
    return d, {r['metric']: r['ratio'] for r in d['results'] if isinstance(r.get('ratio'), (int, float))}


def main():
    p = argparse.ArgumentParser()
    p.add_argument('a')
    p.add_argument('b')
    p.add_argument('--swing', type=float, default=0.03)
    args = p.parse_args()
    da, ra = ratios(args.a)
    db, rb = ratios(args.b)
    both = [k for k in ra if k in rb]
    print(f"A {da.get('commit')} on {da.get('device')}, B {db.get('commit')} on {db.get('device')}: {len(both)} ratios")
    print(f"mean ratio A {statistics.mean(ra[k] for k in both):.3f}, B {statistics.mean(rb[k] for k in both):.3f}")
    lower = [k for k in both if rb[k] < ra[k] - args.swing]
    higher = [k for k in both if rb[k] > ra[k] + args.swing]
    print(f"B lower by more than {args.swing}: {len(lower)}; higher: {len(higher)}")
    for k in both:
        if k in lower or k in higher:
            print(f"  {k:44s} {ra[k]:.3f} -> {rb[k]:.3f}")


if __name__ == '__main__':
    main()
