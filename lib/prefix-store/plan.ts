// Finding the longest stored prefix of a token sequence: the chain hashes of its full chunks
// are looked up in one round trip together with the marker sets of tail and whole entries,
// and a marker is believed only after its entry is seen (markers may outlive entries).
import type { StoreBackend } from './backend';
import { chainHashes, chunkKey, markerKey, prefixKey } from './keys';
import type { PrefixKind } from './types';

export interface Plan {
  length: number;
  kind: PrefixKind;
  /** Entries to read, in order: chunk entries (and a tail) of a plain prefix, or one whole entry. */
  keys: string[];
  /** Rows per stream of each entry (plain), or [] for a whole entry. */
  rows: number[];
}

interface Candidate extends Plan {
  /** The marker-announced entry still to be confirmed, and its marker (set, member). */
  confirm?: string;
  marker?: [string, string];
}

export async function findPrefix(
  backend: StoreBackend,
  print: string,
  tokens: Uint32Array,
  chunkTokens: number,
  prefer: PrefixKind,
): Promise<Plan | null> {
  const chain = chainHashes(print, tokens, chunkTokens);
  const chunks = chain.length - 1;
  const chunkKeys = Array.from({ length: chunks }, (_, i) => chunkKey(chain, i + 1));
  const sets = chain.map((_, k) => markerKey(chain, k));
  const [present, members] = backend.lookup
    ? await backend.lookup(chunkKeys, sets)
    : await Promise.all([backend.has(chunkKeys), backend.markers(sets)]);
  let stored = 0;
  while (stored < chunks && present[stored]) stored++;
  const full = (k: number) => Array.from({ length: k }, () => chunkTokens);
  const candidates: Candidate[] = [];
  if (stored > 0) candidates.push({ length: stored * chunkTokens, kind: 'plain', keys: chunkKeys.slice(0, stored), rows: full(stored) });
  // The set each member came from: the set of chunk k, for a prefix of k full chunks.
  const setOf = (n: number) => sets[Math.floor(n / chunkTokens)]!;
  for (const member of new Set(members)) {
    const m = /^(\d+):([tw])$/.exec(member);
    if (!m) continue;
    const n = Number(m[1]);
    if (n < 1 || n > tokens.length) continue;
    const k = Math.floor(n / chunkTokens);
    if (m[2] === 'w') {
      const key = prefixKey('w', chain, tokens, n, chunkTokens);
      candidates.push({ length: n, kind: 'compacted', keys: [key], rows: [], confirm: key, marker: [setOf(n), member] });
    } else if (k <= stored && n % chunkTokens !== 0) {
      const key = prefixKey('t', chain, tokens, n, chunkTokens);
      candidates.push({ length: n, kind: 'plain', keys: [...chunkKeys.slice(0, k), key], rows: [...full(k), n - k * chunkTokens], confirm: key, marker: [setOf(n), member] });
    }
  }
  candidates.sort((a, b) => b.length - a.length || (a.kind === prefer ? -1 : b.kind === prefer ? 1 : 0));
  // Confirm, in one more round trip, the marker-announced entries ranked above the first
  // candidate that needs no confirmation.
  const firstSure = candidates.findIndex((c) => c.confirm === undefined);
  const unsure = candidates.slice(0, firstSure < 0 ? candidates.length : firstSure);
  const seen = unsure.length > 0 ? await backend.has(unsure.map((c) => c.confirm!)) : [];
  // A marker whose entry is gone (evicted, expired, deleted) is removed, not looked at again
  // by every later lookup. In the background: the lookup does not wait for it. (A writer
  // racing this may see its new marker removed; its entry is then found again after its next put.)
  unsure.forEach((c, i) => {
    if (!seen[i] && backend.removeMarker) backend.removeMarker(...c.marker!).catch(() => undefined);
  });
  const best = candidates.find((c, i) => i >= unsure.length || seen[i]);
  return best ? { length: best.length, kind: best.kind, keys: best.keys, rows: best.rows } : null;
}
