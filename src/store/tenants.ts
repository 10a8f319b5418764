/**
 * Tenants' keys: the fingerprint a call's `tenant` option selects, derived
 * from the store's own and kept for the tenants seen lately.
 */
import { describe, fail } from '../errors.js';
import { checkKnownOptions } from '../util/validate.js';
import { tenantFingerprint } from './keys.js';

/**
 * Whose prompt a call is about. Tenants share one store (its DRAM budget,
 * its NVMe tier, batched loads) but never a key: a tenant never hits, or
 * times, another's prefixes. No tenant (or "") is the store's own keys.
 */
export interface TenantOptions {
  tenant?: string;
}

/** Fingerprints of the tenants seen lately, by name (at most 1024, the oldest forgotten first). */
export class TenantFingerprints {
  readonly #own: string;
  readonly #tenants = new Map<string, string>();

  constructor(own: string) {
    this.#own = own;
  }

  /** The fingerprint of `options.tenant`, once `options` was checked to name only `known` options. */
  of(options: TenantOptions, known: readonly string[] = ['tenant']): string {
    if (options === null || typeof options !== 'object') fail('ERR_INVALID_ARG', `expected an options object, got ${describe(options)}`);
    checkKnownOptions(options, 'options', known);
    const tenant = options.tenant;
    if (tenant === undefined || tenant === '') return this.#own;
    let fp = this.#tenants.get(tenant);
    if (fp === undefined) {
      fp = tenantFingerprint(this.#own, tenant);
      if (this.#tenants.size >= 1024) this.#tenants.delete(this.#tenants.keys().next().value!);
      this.#tenants.set(tenant, fp);
    }
    return fp;
  }
}
