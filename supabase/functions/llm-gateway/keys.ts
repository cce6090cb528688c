/**
 * Which pool keys this deployment holds: the active keys (`public.pool_keys`)
 * whose env vars (function secrets) are set. Read again after a minute, or at
 * once after `forget` (a key was disabled, or a grant named one not held).
 */

import * as db from "./db.ts";

const KEYS_TTL_MS = 60_000;

export class KeyRing {
  private cache:
    | { aliases: string[]; envVars: string[]; until: number }
    | null = null;
  private turn = 0;

  constructor(
    private readonly sql: db.Sql,
    private readonly env: (name: string) => string | undefined,
  ) {}

  async held(): Promise<string[]> {
    return (await this.load()).aliases;
  }

  /** A key's value by its env var name; null when this deployment does not hold it. */
  value(envVar: string | null): string | null {
    return envVar ? this.env(envVar)?.trim() || null : null;
  }

  /** Some held key's value, taking turns, for calls that spend no quota. */
  async any(): Promise<string | null> {
    const { envVars } = await this.load();
    if (envVars.length === 0) return null;
    this.turn = (this.turn + 1) % envVars.length;
    return this.value(envVars[this.turn]);
  }

  forget(): void {
    this.cache = null;
  }

  private async load() {
    if (this.cache === null || performance.now() > this.cache.until) {
      const held = (await db.poolKeys(this.sql)).filter((k) =>
        this.value(k.envVar)
      );
      this.cache = {
        aliases: held.map((k) => k.alias),
        envVars: held.map((k) => k.envVar),
        until: performance.now() + KEYS_TTL_MS,
      };
    }
    return this.cache;
  }
}
