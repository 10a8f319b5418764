// The validation vocabulary: one sentence shape, one code per kind of error.
import { describe, expect, it } from 'vitest';

import {
  checkBlockMultiple,
  checkChoice,
  checkInstance,
  checkInteger,
  checkRange,
  choiceList,
  invalidParameterError,
} from '../../src/util/validate.js';
import { choice } from '../../src/index.js';
import { codeOf } from '../helpers/backends.js';

describe('validate', () => {
  it('says "expected X for Y, got Z" with a stable code', () => {
    const e = invalidParameterError('engine', "'dma' or 'kernel'", 'fast');
    expect(e.message).toBe(`expected 'dma' or 'kernel' for engine, got "fast"`);
    expect(e.code).toBe('ERR_INVALID_ARG');
    expect(choiceList(['a'])).toBe("'a'");
    expect(choiceList(['a', 'b', 'c'])).toBe("'a', 'b' or 'c'");
    expect(() => checkChoice('x', 'mode', ['on', 'off'])).toThrow(`expected 'on' or 'off' for mode, got "x"`);
    expect(checkChoice('on', 'mode', ['on', 'off'])).toBe('on');
    expect(() => checkInteger(0, 'threads', 1, 1024)).toThrow('expected an integer from 1 to 1024 for threads, got 0');
    expect(() => checkInteger(1.5, 'threads', 1, 1024)).toThrow(KvflowErrorLike);
    expect(() => checkBlockMultiple(4097, 'chunk', 1 << 30)).toThrow('expected a multiple of 4096 from 4096 to 1073741824 for chunk, got 4097');
    expect(() => checkInstance({}, 'file', 'a Map', Map)).toThrow('expected a Map for file, got a Object');
    expect(codeOf(() => checkRange(10, 10, 16, 'destination'))).toBe('ERR_OUT_OF_RANGE');
  });

  it('choice() makes a frozen requested / chosen / reason', () => {
    const c = choice('auto', 'posix', 'io_uring cannot be used: EPERM');
    expect(c).toEqual({ requested: 'auto', chosen: 'posix', reason: 'io_uring cannot be used: EPERM' });
    expect(Object.isFrozen(c)).toBe(true);
  });
});

const KvflowErrorLike = /expected an integer from 1 to 1024 for threads, got 1\.5/;
