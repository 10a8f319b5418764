/**
 * The native end of events recorded on a stream. The addon hands out a
 * recorded event as its id in the device's table (a number: an object of
 * the addon's own per record, with its finalizer, cost about a microsecond,
 * more than the rest of a small copy's host time); each id is wrapped here in
 * a plain object that asks the device about it.
 *
 * The device lets go of an id as soon as its event is known to have
 * succeeded (the object keeps the outcome, and its time when timed: nothing
 * is left to ask the addon, and a stream has nothing to wait for), and
 * otherwise once the object was collected. A plain object is collected only
 * by a full GC, so records never awaited would pile up in the table between
 * them: the addon counts its table as external memory, which makes V8 run
 * one sooner.
 */
import type { NativeDevice, NativeEvent, NativeEventStatus } from '../binding/types.js';

/** A recorded event as the rest of kvflow sees it: a NativeEvent answered by its device until it is known to have succeeded. */
export class RecordedEvent implements NativeEvent {
  readonly #owner: RecordedEvents;
  /** Known to have succeeded: the id is released and the answers below come from here. */
  #ok = false;
  /** Its completion time, once known to have succeeded (timed events). */
  #timeMs: number | undefined;

  /** @internal */
  constructor(
    owner: RecordedEvents,
    /** The device it was recorded on (a stream waits only on its own device's events). */
    readonly device: NativeDevice,
    readonly id: number,
    readonly timed: boolean,
  ) {
    this.#owner = owner;
  }

  /** @internal Known to have succeeded: nothing to ask the device, nothing for a stream to wait for. */
  get succeeded(): boolean {
    return this.#ok;
  }

  watch(spinUs?: number): NativeEventStatus {
    if (this.#ok) return 1;
    return this.#learn(spinUs === undefined ? this.device.eventWatch(this.id) : this.device.eventWatch(this.id, spinUs));
  }

  status(): NativeEventStatus {
    if (this.#ok) return 1;
    return this.#learn(this.device.eventStatus(this.id));
  }

  error(): Error | undefined {
    if (this.#ok || this.status() !== 2) return undefined;
    return this.device.eventError(this.id);
  }

  timeMs(): number | undefined {
    if (this.#ok) return this.#timeMs;
    return this.device.eventTimeMs(this.id);
  }

  /** A status read from the device: on success, the outcome is kept here and the id released. */
  #learn(status: NativeEventStatus): NativeEventStatus {
    if (status === 1) {
      // The time is set before the status is published: it is there to read.
      if (this.timed) this.#timeMs = this.device.eventTimeMs(this.id);
      this.#ok = true;
      this.#owner.release(this.id);
    }
    return status;
  }
}

/** One device's recorded events: wraps the ids the addon hands out, and releases them. */
export class RecordedEvents {
  readonly #device: NativeDevice;
  readonly #registry = new FinalizationRegistry<number>((id) => this.release(id));
  #released: number[] = [];

  constructor(device: NativeDevice) {
    this.#device = device;
  }

  /** The event the addon recorded as `id`. */
  adopt(id: number, timed: boolean): RecordedEvent {
    const event = new RecordedEvent(this, this.#device, id, timed);
    // An id released early is released again when its object is collected:
    // the addon ignores ids it no longer holds (cheaper than unregistering).
    this.#registry.register(event, id);
    return event;
  }

  /** True for an event recorded on this device. */
  owns(event: RecordedEvent): boolean {
    return event.device === this.#device;
  }

  /**
   * @internal Lets go of `id` in the addon, with the others of this turn of
   * the event loop in one call, at its check phase: never between a settled
   * wait and the code it resumes (a microtask would run before an awaited
   * copy's continuation, on the path of the next copy), and once for all of
   * a GC's collected events, which arrive one by one.
   */
  release(id: number): void {
    if (this.#released.push(id) === 1) setImmediate(this.#release);
  }

  readonly #release = (): void => {
    const ids = this.#released;
    this.#released = [];
    try {
      this.#device.releaseEvents(ids);
    } catch {
      // never thrown by the addon; a release must not fail a GC's callback
    }
  };
}
