/**
 * A progress line on stderr for steps that take over a second: drawn only
 * when stderr is a terminal (a log or a pipe gets no progress, so captured
 * output stays clean), redrawn in place every half second, erased when the
 * step ends.
 */
export class Progress {
  readonly #tty: boolean;
  readonly #out: NodeJS.WriteStream;
  #timer: NodeJS.Timeout | undefined;
  #shown = false;

  constructor(out: NodeJS.WriteStream = process.stderr) {
    this.#out = out;
    this.#tty = out.isTTY === true;
  }

  /** Starts a step: its line appears after a second (at once with `now`), with the seconds spent. */
  step(label: string, now = false): void {
    this.done();
    if (!this.#tty) return;
    const t0 = performance.now();
    const draw = (): void => {
      this.#shown = true;
      this.#out.write(`\r\x1b[K${label} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    };
    if (now) draw();
    this.#timer = setTimeout(() => {
      draw();
      this.#timer = setInterval(draw, 500);
      this.#timer.unref();
    }, 1000);
    this.#timer.unref();
  }

  /** Ends the step and erases its line. */
  done(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#shown) this.#out.write('\r\x1b[K');
    this.#shown = false;
  }
}
