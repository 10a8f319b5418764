// The demo's progress line: drawn on a terminal only, once a step has run a
// second, redrawn in place, erased when the step ends (fake timers).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { Progress } from '../../src/cli/progress.js';

function stream(isTTY: boolean): { out: NodeJS.WriteStream; written: string[] } {
  const written: string[] = [];
  const out = { isTTY, write: (s: string) => written.push(s) > 0 } as unknown as NodeJS.WriteStream;
  return { out, written };
}

describe('Progress', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('on a terminal, shows a step once it has run a second, redraws it, and erases it when done', () => {
    const { out, written } = stream(true);
    const p = new Progress(out);
    p.step('warming up');
    vi.advanceTimersByTime(900);
    expect(written).toEqual([]);
    vi.advanceTimersByTime(200);
    expect(written).toHaveLength(1);
    expect(written[0]).toMatch(/^\r\x1b\[Kwarming up \(\d+ s\)$/);
    vi.advanceTimersByTime(1000);
    expect(written.length).toBeGreaterThan(1);
    const before = written.length;
    p.done();
    expect(written.slice(before)).toEqual(['\r\x1b[K']);
    vi.advanceTimersByTime(5000);
    expect(written).toHaveLength(before + 1);
  });

  it('a step that ends within a second writes nothing; `now` draws at once', () => {
    const { out, written } = stream(true);
    const p = new Progress(out);
    p.step('quick');
    vi.advanceTimersByTime(500);
    p.done();
    expect(written).toEqual([]);
    p.step('building', true);
    expect(written).toHaveLength(1);
    expect(written[0]).toContain('building');
    p.done();
  });

  it('writes nothing when the stream is not a terminal', () => {
    const { out, written } = stream(false);
    const p = new Progress(out);
    p.step('long', true);
    vi.advanceTimersByTime(10_000);
    p.done();
    expect(written).toEqual([]);
  });
});
