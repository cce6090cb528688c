/**
 * Caller tokens: where a request carries one, its digest, and the constant-time comparison.
 *
 * The database finds a caller by the SHA-256 of its token (an index lookup on a digest the
 * presenter cannot steer towards a stored one), and the gateway then compares the stored digest
 * with its own in constant time, so no answer time depends on how many bytes matched.
 */

/** The token in `x-goog-api-key` (what the SDKs send as their API key) or a Bearer header. */
export function tokenOf(headers: Headers): string | null {
  const key = headers.get("x-goog-api-key")?.trim();
  if (key) return key;
  const auth = headers.get("authorization")?.trim() ?? "";
  const match = /^Bearer\s+(\S+)$/i.exec(auth);
  return match ? match[1] : null;
}

export async function sha256(text: string): Promise<Uint8Array> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(text),
  );
  return new Uint8Array(digest);
}

export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Equal contents, in time that depends only on the lengths. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    diff |= (a[i % a.length] ?? 0) ^ (b[i % b.length] ?? 0);
  }
  return diff === 0;
}
