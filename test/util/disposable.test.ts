// The disposable base: children disposed rank by rank before their parent,
// once; busy parents refuse `wait: false`; a failing child does not stop
// the others.
import { describe, expect, it } from 'vitest';

import { Disposable, DisposeOrder, KvflowError } from '../../src/index.js';

class Node extends Disposable {
  protected readonly resourceName = 'node';
  busyNow = false;
  constructor(
    readonly name: string,
    readonly log: string[],
    readonly failWith?: Error,
  ) {
    super();
  }
  add(child: Node | { [Symbol.asyncDispose](): Promise<void> }, order: number): () => void {
    return this.own(child, order);
  }
  addWeakly(child: Node, order: number): void {
    this.ownWeakly(child, order);
  }
  protected override busySelf(): boolean {
    return this.busyNow;
  }
  protected async disposeSelf(): Promise<void> {
    await Promise.resolve();
    this.log.push(this.name);
    if (this.failWith) throw this.failWith;
  }
}

describe('Disposable', () => {
  it('disposes children by rank, each rank before the next, then itself, once', async () => {
    const log: string[] = [];
    const root = new Node('root', log);
    const buffer = new Node('buffer', log);
    const stream = new Node('stream', log);
    const cache = new Node('cache', log);
    const plan = new Node('plan', log);
    root.add(buffer, DisposeOrder.buffers);
    root.add(stream, DisposeOrder.streams);
    root.add(cache, DisposeOrder.caches);
    cache.addWeakly(plan, DisposeOrder.caches);
    root.add({ [Symbol.asyncDispose]: async () => void log.push('adopted') }, DisposeOrder.adopted);
    const first = root.dispose();
    expect(root.dispose()).toBe(first);
    await first;
    expect(log).toEqual(['adopted', 'plan', 'cache', 'stream', 'buffer', 'root']);
    await root[Symbol.asyncDispose]();
    expect(log).toHaveLength(6);
    expect(() => root.add(new Node('late', log), 0)).toThrow(KvflowError);
  });

  it('a child disposed on its own leaves; a detached adopted object is not disposed', async () => {
    const log: string[] = [];
    const root = new Node('root', log);
    const child = new Node('child', log);
    root.add(child, DisposeOrder.streams);
    await child.dispose();
    const detach = root.add({ [Symbol.asyncDispose]: async () => void log.push('adopted') }, DisposeOrder.adopted);
    detach();
    await root.dispose();
    expect(log).toEqual(['child', 'root']);
  });

  it('wait: false rejects with ERR_BUSY when a child is busy, and disposes nothing', async () => {
    const log: string[] = [];
    const root = new Node('root', log);
    const child = new Node('child', log);
    root.add(child, DisposeOrder.streams);
    child.busyNow = true;
    await expect(root.dispose({ wait: false })).rejects.toMatchObject({ code: 'ERR_BUSY', message: 'node has work in flight' });
    expect(root.disposed).toBe(false);
    child.busyNow = false;
    await root.dispose({ wait: false });
    expect(log).toEqual(['child', 'root']);
  });

  it('a child that fails to dispose does not stop the others or the parent; its error is reported', async () => {
    const log: string[] = [];
    const root = new Node('root', log);
    const boom = new Error('boom');
    root.add(new Node('bad', log, boom), DisposeOrder.files);
    root.add(new Node('buffer', log), DisposeOrder.buffers);
    await expect(root.dispose()).rejects.toBe(boom);
    expect(log).toEqual(['bad', 'buffer', 'root']);
  });
});
