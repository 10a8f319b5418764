/** CRC-32C (Castagnoli) over bytes in JS memory, the checksum of the KV store's extents. */
import { loadBinding } from '../binding/load.js';
import { checkU32, invalidParameterError } from '../util/validate.js';

/**
 * CRC-32C of `data` continuing from `seed` (0 to start), as an unsigned
 * 32-bit number: `crc32c(Buffer.from('123456789')) === 0xe3069283`, and
 * `crc32c(b, crc32c(a)) === crc32c(a followed by b)`. Runs on the calling
 * thread (CPU CRC instructions where available): meant for small data and
 * checks; `file.readChecked` and `file.writeSummed` checksum file IO on the
 * IO threads.
 */
export function crc32c(data: Uint8Array, seed = 0): number {
  if (!(data instanceof Uint8Array)) throw invalidParameterError('data', 'a Uint8Array', data);
  checkU32(seed, 'seed');
  return loadBinding().binding.crc32c(data, seed);
}
