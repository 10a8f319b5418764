/** What `kvflow demo` reports: the shapes of `--json`, and the table people read. */
import type { PagedEngine } from '../layout/kvcache.js';
import type { PrefillPolicy } from '../model/plan.js';
import type { ChatModel, ChatShape } from './demo-chat.js';

/** One turn of the demo, as `--json` reports it. */
export interface DemoTurn {
  turn: number;
  promptTokens: number;
  /** Cached tokens the store held for this prompt (whole chunks of its start), and their share of it. */
  hit: { tokens: number; rate: number };
  /** What kvflow's prefill did: tokens loaded per tier, tokens computed, and why. */
  /** `engine`: how its loads moved (`auto`: the pipeline's rule; `--engine`). */
  plan: { policy: PrefillPolicy; engine: PagedEngine; loadTokens: number; loaded: { tier: string; tokens: number }[]; computeFrom: number; computeTokens: number; predictedMs: number; reason: string };
  /** Time to first token in ms (the whole prefill: embedding, every layer, final norm; saves to DRAM included). */
  ttftMs: { kvflow: number; recompute: number };
  /** recompute / kvflow. */
  speedup: number;
  /** The next token each prefill's last hidden state predicts. */
  predicted: { kvflow: number; recompute: number };
  /** Final hidden states of the computed tokens against the full recompute's. */
  check: { maxRelDiff: number; tolerance: number; ok: boolean };
  restarts: number;
  /** Chunks the turn added to the store. */
  saved: number;
  /** Where kvflow's prefill spent its time, per layer (see `DemoTimeline`); the recompute's beside it. */
  timeline: { kvflow: DemoTimeline; recompute: DemoTimeline };
}

/** A prefill's layers in brief: medians of the device (or host) durations, and the host's time per layer by who spent it. */
export interface DemoTimeline {
  timeSource: 'device' | 'host';
  computeMsMedian: number;
  loadMsMedian: number;
  /** Compute waiting on loads, summed over the layers. */
  stallMs: number;
  /** Host time per layer (means): the pipeline's own work, the store's calls, the model's launches. */
  hostUs: { own: number; store: number; compute: number };
}

/** What `kvflow demo --json` prints. */
export interface DemoReport {
  ok: boolean;
  device: { backend: string; name: string; reason: string };
  model: { preset: ChatModel; layers: number; hidden: number; heads: number; kvHeads: number; dtype: string };
  chat: ChatShape;
  store: { dir: string; temporary: boolean; chunkTokens: number; blockTokens: number };
  turns: DemoTurn[];
  wallMs: number;
}

const fmtMs = (ms: number): string => (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2));

/** The human-readable report. */
export function formatDemo(r: DemoReport): string {
  const lines: string[] = [];
  const m = r.model;
  lines.push(`device     ${r.device.backend}: ${r.device.name} (${r.device.reason})`);
  lines.push(`model      reference ${m.preset}: ${m.layers} layers, width ${m.hidden}, ${m.heads} heads / ${m.kvHeads} KV heads, ${m.dtype}, random weights`);
  lines.push(`chat       ${r.chat.turns} turns: a ${r.chat.firstTokens}-token first prompt, then each turn appends a ${r.chat.answerTokens}-token answer and a ${r.chat.userTokens}-token message`);
  lines.push(`store      ${r.store.temporary ? 'temporary ' : ''}${r.store.dir}: ${r.store.chunkTokens}-token chunks in DRAM and on NVMe`);
  lines.push('');
  const head = ['turn', 'prompt', 'hit', 'loaded', 'computed', 'TTFT kvflow', 'recompute', 'speedup', 'next token', 'max|diff|/max|ref|'];
  const rows = r.turns.map((t) => [
    String(t.turn), String(t.promptTokens), `${t.hit.tokens} (${(t.hit.rate * 100).toFixed(0)}%)`,
    String(t.plan.loadTokens), String(t.plan.computeTokens),
    `${fmtMs(t.ttftMs.kvflow)} ms`, `${fmtMs(t.ttftMs.recompute)} ms`, `${t.speedup.toFixed(2)}x`,
    t.predicted.kvflow === t.predicted.recompute ? `${t.predicted.kvflow} (both)` : `${t.predicted.kvflow} vs ${t.predicted.recompute}`,
    `${t.check.maxRelDiff.toExponential(1)} ${t.check.ok ? 'ok' : 'FAIL'}`,
  ]);
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((row) => row[c]!.length)));
  for (const row of [head, ...rows]) lines.push(row.map((cell, c) => (c === 8 || c === 9 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd());
  lines.push('');
  for (const g of sameReasons(r.turns)) lines.push(`${g.label.padEnd(10)} ${g.reason}`);
  lines.push('');
  const tol = r.turns[0]?.check.tolerance ?? 0;
  const bad = r.turns.filter((t) => !t.check.ok).map((t) => t.turn);
  lines.push(bad.length === 0
    ? `verified   every turn's final hidden states equal a full recompute (max|diff|/max|ref| <= ${tol.toExponential(0)}), with the same next token`
    : `FAILED     turns ${bad.join(', ')}: final hidden states differ from a full recompute by more than ${tol.toExponential(0)}`);
  lines.push(`wall time  ${(r.wallMs / 1000).toFixed(1)} s`);
  return `${lines.join('\n')}\n`;
}

/** Consecutive turns whose plan gave the same reason, so that each reason is printed once. */
function sameReasons(turns: readonly DemoTurn[]): { label: string; reason: string }[] {
  const groups: { first: number; last: number; reason: string }[] = [];
  for (const t of turns) {
    const g = groups[groups.length - 1];
    if (g && g.reason === t.plan.reason && g.last === t.turn - 1) g.last = t.turn;
    else groups.push({ first: t.turn, last: t.turn, reason: t.plan.reason });
  }
  return groups.map((g) => ({ label: g.first === g.last ? `turn ${g.first}` : `turns ${g.first}-${g.last}`, reason: g.reason }));
}
