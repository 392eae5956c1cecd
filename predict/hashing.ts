/**
 * Weighted rendezvous (highest-random-weight) hashing for placing replicas of a key over zones, plus a
 * bounded-load variant that respects zone capacities. Pure and stable across runtimes: the same key and
 * zones give the same placement in a Worker, a Durable Object and a Node benchmark.
 */

/** A placement target. `weight` is its share of keys (<= 0 excludes it); `capacity` caps keys held. */
export interface Zone {
  id: string
  weight: number
  capacity?: number
}

/** A 64-bit hash as two unsigned 32-bit halves (avoids BigInt on the hot path). */
export interface Hash64 {
  hi: number
  lo: number
}

const encoder = new TextEncoder()

/** Murmur3's finaliser: full avalanche of a 32-bit value in three multiply-xorshift rounds. */
function fmix32(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** MurmurHash3 x86 32-bit over bytes: fast with Math.imul and good enough dispersion for placement. */
export function murmur3(bytes: Uint8Array, seed: number): number {
  const c1 = 0xcc9e2d51
  const c2 = 0x1b873593
  let h = seed >>> 0
  const blocks = bytes.length >>> 2
  for (let i = 0; i < blocks; i++) {
    const o = i * 4
    let k = bytes[o]! | (bytes[o + 1]! << 8) | (bytes[o + 2]! << 16) | (bytes[o + 3]! << 24)
    k = Math.imul(k, c1)
    k = (k << 15) | (k >>> 17)
    k = Math.imul(k, c2)
    h ^= k
    h = (h << 13) | (h >>> 19)
    h = (Math.imul(h, 5) + 0xe6546b64) | 0
  }
  const tail = blocks * 4
  let k = 0
  const rest = bytes.length & 3
  if (rest > 0) {
    if (rest === 3) k ^= bytes[tail + 2]! << 16
    if (rest >= 2) k ^= bytes[tail + 1]! << 8
    k ^= bytes[tail]!
    k = Math.imul(k, c1)
    k = (k << 15) | (k >>> 17)
    k = Math.imul(k, c2)
    h ^= k
  }
  return fmix32(h ^ bytes.length)
}

/** Stable 64-bit string hash (UTF-8) from two independently seeded Murmur3 passes. */
export function hash64(input: string): Hash64 {
  const bytes = encoder.encode(input)
  return { hi: murmur3(bytes, 0x9747b28c), lo: murmur3(bytes, 0x5bd1e995) }
}

/**
 * Mixes a key hash with a zone hash into a uniform number strictly inside (0, 1), using 53 bits. Hashing
 * key and zone separately then mixing means n keys x m zones costs n + m string hashes, not n * m.
 */
export function pairUniform(key: Hash64, zone: Hash64): number {
  const a = fmix32(key.lo ^ Math.imul(zone.hi, 0x9e3779b1))
  const b = fmix32(key.hi ^ Math.imul(zone.lo, 0x85ebca77) ^ a)
  const c = fmix32(a ^ Math.imul(b, 0xc2b2ae3d) ^ zone.lo)
  // 32 + 21 bits; the +0.5 keeps the result off 0 so ln(u) is finite. Above 2^52 the half rounds to even,
  // so the largest value, 2^53 - 1, became 2^53 and u exactly 1: ln(u) = 0 and the score -w / 0 = -Infinity,
  // the best possible draw ranked last. Capped at the largest double below 1, which changes no other draw.
  return Math.min(((b >>> 0) * 2097152 + (c >>> 11) + 0.5) / 9007199254740992, 1 - 2 ** -53)
}

/**
 * Weighted HRW score -w / ln(u). Since -ln(u) / w is Exp(w)-distributed, the zone with the highest score
 * (smallest exponential) wins with probability w / sum(w): exactly proportional to weight, and changing one
 * zone's weight only changes comparisons involving that zone.
 */
export function rendezvousScore(key: Hash64, zone: Hash64, weight: number): number {
  if (!(weight > 0)) return Number.NEGATIVE_INFINITY
  return -weight / Math.log(pairUniform(key, zone))
}

/** A zone with its hash computed once, for placing many keys. */
export interface PreparedZone extends Zone {
  hash: Hash64
}

export function prepareZones(zones: readonly Zone[]): PreparedZone[] {
  return zones.map((z) => ({ ...z, hash: hash64(z.id) }))
}

/** Eligible zones for `key`, best first; ties (practically impossible) break by id for stability. */
export function rankZones(key: string, zones: readonly PreparedZone[]): PreparedZone[] {
  const k = hash64(key)
  return zones
    .filter((z) => z.weight > 0)
    .map((z) => ({ z, s: rendezvousScore(k, z.hash, z.weight) }))
    .sort((a, b) => b.s - a.s || (a.z.id < b.z.id ? -1 : a.z.id > b.z.id ? 1 : 0))
    .map((e) => e.z)
}

/** Accepts zones with or without precomputed hashes, so callers placing many keys can prepare once. */
function ensurePrepared(zones: readonly Zone[]): PreparedZone[] {
  return zones.map((z) => ('hash' in z ? (z as PreparedZone) : { ...z, hash: hash64(z.id) }))
}

/** The `replicas` distinct zones that should hold `key`, primary first. Fewer if fewer zones are eligible. */
export function placeReplicas(key: string, zones: readonly Zone[], replicas: number): string[] {
  return rankZones(key, ensurePrepared(zones))
    .slice(0, replicas)
    .map((z) => z.id)
}

/**
 * Bounded-load placement of one key given current loads (keys held per zone): walks the HRW ranking and
 * skips zones at capacity, so a full zone spills to the key's next-best zone and nowhere else. Zones
 * without a capacity are unbounded. May return fewer than `replicas` ids if everything is full.
 */
export function placeBounded(
  key: string,
  zones: readonly Zone[],
  replicas: number,
  load: Readonly<Record<string, number>>,
): string[] {
  const out: string[] = []
  for (const z of rankZones(key, ensurePrepared(zones))) {
    if (out.length >= replicas) break
    if (z.capacity === undefined || (load[z.id] ?? 0) < z.capacity) out.push(z.id)
  }
  return out
}

export interface Assignment {
  /** key -> zone ids, primary first. */
  placement: Record<string, string[]>
  /** zone id -> number of replicas held. */
  load: Record<string, number>
  /** Keys that got fewer than the requested replicas because capacity ran out. */
  underReplicated: string[]
}

/**
 * Places many keys with bounded loads, in the given order (the order decides who spills when zones fill,
 * so pass hottest keys first to keep them on their preferred zones).
 */
export function assignBounded(keys: readonly string[], zones: readonly Zone[], replicas: number): Assignment {
  const prepared = prepareZones(zones)
  const load: Record<string, number> = Object.create(null)
  const placement: Record<string, string[]> = Object.create(null)
  const underReplicated: string[] = []
  for (const z of prepared) load[z.id] = 0
  for (const key of keys) {
    const ids = placeBounded(key, prepared, replicas, load)
    for (const id of ids) load[id] = (load[id] ?? 0) + 1
    placement[key] = ids
    if (ids.length < replicas) underReplicated.push(key)
  }
  return { placement, load, underReplicated }
}

/**
 * Capacities for "consistent hashing with bounded loads": each zone may hold at most (1 + epsilon) times
 * its weighted fair share of `totalReplicas`, rounded up. Small epsilon = even load, more keys moved on
 * change; the classic choice is 0.25.
 */
export function boundedCapacities(zones: readonly Zone[], totalReplicas: number, epsilon = 0.25): Zone[] {
  const totalWeight = zones.reduce((s, z) => s + Math.max(0, z.weight), 0)
  return zones.map((z) => ({
    ...z,
    capacity:
      totalWeight > 0 ? Math.ceil(((1 + epsilon) * totalReplicas * Math.max(0, z.weight)) / totalWeight) : 0,
  }))
}
