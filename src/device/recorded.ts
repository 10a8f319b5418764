/**
 * The native end of events recorded on a stream. The addon hands out a
 * recorded event as its id in the device's table (a number: an object of
 * the addon's own per record, with its finalizer, cost about a microsecond,
 * more than the rest of a small copy's host time); each id is wrapped here in
 * a plain object that asks the device about it, and the device lets go of it
 * once that object was collected, in batches.
 */
import type { NativeDevice, NativeEvent, NativeEventStatus } from '../binding/types.js';

/** A recorded event as the rest of kvflow sees it: a NativeEvent answered by its device. */
export class RecordedEvent implements NativeEvent {
  /** @internal */
  constructor(
    /** The device it was recorded on (a stream waits only on its own device's events). */
    readonly device: NativeDevice,
    readonly id: number,
    readonly timed: boolean,
  ) {}

  watch(spinUs?: number): NativeEventStatus {
    return spinUs === undefined ? this.device.eventWatch(this.id) : this.device.eventWatch(this.id, spinUs);
  }

  status(): NativeEventStatus {
    return this.device.eventStatus(this.id);
  }

  error(): Error | undefined {
    return this.device.eventError(this.id);
  }

  timeMs(): number | undefined {
    return this.device.eventTimeMs(this.id);
  }
}

/** One device's recorded events: wraps the ids the addon hands out, and releases those collected. */
export class RecordedEvents {
  readonly #device: NativeDevice;
  readonly #registry = new FinalizationRegistry<number>((id) => this.#collected(id));
  #released: number[] = [];

  constructor(device: NativeDevice) {
    this.#device = device;
  }

  /** The event the addon recorded as `id`, released in the device's table once collected. */
  adopt(id: number, timed: boolean): RecordedEvent {
    const event = new RecordedEvent(this.#device, id, timed);
    this.#registry.register(event, id);
    return event;
  }

  /** True for an event recorded on this device. */
  owns(event: RecordedEvent): boolean {
    return event.device === this.#device;
  }

  // One GC's collected events reach here one by one in a single task: they
  // are released together in a microtask after it.
  #collected(id: number): void {
    if (this.#released.push(id) === 1) queueMicrotask(this.#release);
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
