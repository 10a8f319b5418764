/**
 * A small dependency-free SVG line plot for benchmark results: a few series
 * of (x, y) points on linear axes with round ticks, a legend, and vertical
 * markers (e.g. a crossover). Enough to read a curve beside its JSON file.
 */

/** One curve. */
export interface Series {
  name: string;
  points: readonly (readonly [number, number])[];
  /** Stroke colour; default from a fixed palette in series order. */
  color?: string;
  /** Dashed line (e.g. a prediction beside its measurement). */
  dashed?: boolean;
  /** Vertical error bars per point, same order as `points`: [low, high]. */
  ranges?: readonly (readonly [number, number] | null)[];
}

/** A vertical line across the plot at `x`, labelled. */
export interface Marker {
  x: number;
  label: string;
}

export interface PlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly Series[];
  markers?: readonly Marker[];
  /** Pixels; default 720 x 440. */
  width?: number;
  height?: number;
  /** Axis ranges; default from the data (y from 0 when all values are positive). */
  xRange?: readonly [number, number];
  yRange?: readonly [number, number];
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#17becf', '#bcbd22'];

/** XML text escaping. */
export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Round tick values covering [lo, hi] (about `count` of them): steps of 1, 2 or 5 times a power of ten. */
export function niceTicks(lo: number, hi: number, count = 6): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi <= lo) hi = lo + (lo === 0 ? 1 : Math.abs(lo) * 0.1);
  const raw = (hi - lo) / Math.max(1, count - 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag);
  const out: number[] = [];
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);
  for (let i = first; i <= last; i++) out.push(Number((i * step).toPrecision(12)));
  return out;
}

function label(v: number): string {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

/** Renders the plot as a standalone SVG document. */
export function linePlot(o: PlotOptions): string {
  const W = o.width ?? 720;
  const H = o.height ?? 440;
  const m = { left: 70, right: 200, top: 40, bottom: 55 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const xs: number[] = [];
  const ys: number[] = [];
  for (const s of o.series) {
    for (const [i, [x, y]] of s.points.entries()) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      xs.push(x);
      ys.push(y);
      const r = s.ranges?.[i];
      if (r) ys.push(r[0], r[1]);
    }
  }
  for (const mk of o.markers ?? []) if (Number.isFinite(mk.x)) xs.push(mk.x);
  const xTicks = niceTicks(o.xRange?.[0] ?? Math.min(...xs, 0), o.xRange?.[1] ?? Math.max(...xs, 1));
  const yLo = o.yRange?.[0] ?? Math.min(0, ...ys);
  const yTicks = niceTicks(yLo, o.yRange?.[1] ?? Math.max(...ys, yLo + 1));
  const x0 = xTicks[0] ?? 0;
  const x1 = xTicks[xTicks.length - 1] ?? 1;
  const y0 = yTicks[0] ?? 0;
  const y1 = yTicks[yTicks.length - 1] ?? 1;
  const px = (x: number): number => m.left + ((x - x0) / (x1 - x0 || 1)) * pw;
  const py = (y: number): number => m.top + ph - ((y - y0) / (y1 - y0 || 1)) * ph;
  const f = (v: number): string => v.toFixed(1);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${escapeXml(o.title)}</text>`);
  for (const t of xTicks) {
    out.push(`<line x1="${f(px(t))}" y1="${m.top}" x2="${f(px(t))}" y2="${m.top + ph}" stroke="#eee"/>`);
    out.push(`<text x="${f(px(t))}" y="${m.top + ph + 16}" text-anchor="middle">${escapeXml(label(t))}</text>`);
  }
  for (const t of yTicks) {
    out.push(`<line x1="${m.left}" y1="${f(py(t))}" x2="${m.left + pw}" y2="${f(py(t))}" stroke="#eee"/>`);
    out.push(`<text x="${m.left - 6}" y="${f(py(t) + 4)}" text-anchor="end">${escapeXml(label(t))}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${m.left + pw / 2}" y="${H - 12}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`);
  out.push(`<text transform="translate(16 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(o.yLabel)}</text>`);
  for (const mk of o.markers ?? []) {
    if (!Number.isFinite(mk.x) || mk.x < x0 || mk.x > x1) continue;
    out.push(`<line x1="${f(px(mk.x))}" y1="${m.top}" x2="${f(px(mk.x))}" y2="${m.top + ph}" stroke="#555" stroke-dasharray="2 3"/>`);
    const right = px(mk.x) > m.left + pw * 0.6;
    out.push(`<text x="${f(px(mk.x) + (right ? -4 : 4))}" y="${m.top + 12}" fill="#555"${right ? ' text-anchor="end"' : ''}>${escapeXml(mk.label)}</text>`);
  }
  for (const [i, s] of o.series.entries()) {
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    if (pts.length > 1) {
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${pts.map(([x, y]) => `${f(px(x))},${f(py(y))}`).join(' ')}"/>`);
    }
    for (const [j, [x, y]] of s.points.entries()) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      const r = s.ranges?.[j];
      if (r) out.push(`<line x1="${f(px(x))}" y1="${f(py(r[0]))}" x2="${f(px(x))}" y2="${f(py(r[1]))}" stroke="${color}"/>`);
      out.push(s.dashed
        ? `<rect x="${f(px(x) - 3)}" y="${f(py(y) - 3)}" width="6" height="6" fill="white" stroke="${color}"/>`
        : `<circle cx="${f(px(x))}" cy="${f(py(y))}" r="3" fill="${color}"/>`);
    }
    const ly = m.top + 10 + i * 18;
    out.push(`<line x1="${m.left + pw + 12}" y1="${ly}" x2="${m.left + pw + 36}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${m.left + pw + 42}" y="${ly + 4}">${escapeXml(s.name)}</text>`);
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
