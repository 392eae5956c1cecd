/** What every contender (peer tool or deltaport method) reports for one pair. */
export type Status = 'ok' | 'skipped' | 'error' | 'timeout' | 'mismatch'

export interface MethodResult {
  method: string
  /** Anchors are the external tools whose smallest exact delta is the bar; ours are deltaport methods. */
  family: 'anchor' | 'ours'
  status: Status
  note?: string
  deltaBytes?: number
  makeMs?: number
  applyMs?: number
  makeRssKiB?: number
  applyRssKiB?: number
  /** Output bytes differ but the gunzipped content equals the target's (xdelta3 re-gzipping .tgz). */
  contentIdentical?: boolean
  /** How the apply was run (deltaport: 'stream' or 'buffer'). */
  applyForm?: string
  /**
   * Big pair only: the same streaming apply through a reader without the optional `readInto` (one fresh
   * array per source read), to show what that costs in peak RSS.
   */
  applyPlainMs?: number
  applyPlainRssKiB?: number
}

export interface PairResult {
  name: string
  kind: string
  note: string
  sourceBytes: number
  targetBytes: number
  methods: MethodResult[]
}

export const METHODS = ['vcdiff', 'approx', 'archive', 'best'] as const
export type OurMethod = (typeof METHODS)[number]

/** The JSON line bench/codec/child.ts prints last. */
export interface ChildReport {
  status: 'ok' | 'skipped' | 'error'
  note?: string
  ms?: number
  maxRssKiB?: number
  deltaBytes?: number
  form?: 'stream' | 'buffer'
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/**
 * One method's rounds on one pair as one result: median times (a load burst on the shared machine
 * moves one round, not the median), the largest peak memory, and the first round that failed, if any,
 * so a flaky failure is never averaged away. Sizes are deterministic and come from the first round.
 */
export function combineRounds(rounds: readonly MethodResult[]): MethodResult {
  const failed = rounds.find((r) => r.status !== 'ok')
  if (failed) return failed
  const combined: MethodResult = { ...rounds[0]! }
  const across = (key: keyof typeof ROUND_FIELDS, pick: (xs: number[]) => number) => {
    const xs = rounds.map((r) => r[key]).filter((x): x is number => x !== undefined)
    if (xs.length === rounds.length) combined[key] = pick(xs)
  }
  for (const key of Object.keys(ROUND_FIELDS) as (keyof typeof ROUND_FIELDS)[])
    across(key, ROUND_FIELDS[key] === 'median' ? median : (xs) => Math.max(...xs))
  return combined
}

/** How each measured field of a method's rounds is combined. */
const ROUND_FIELDS = {
  makeMs: 'median',
  applyMs: 'median',
  applyPlainMs: 'median',
  makeRssKiB: 'max',
  applyRssKiB: 'max',
  applyPlainRssKiB: 'max',
} as const satisfies Partial<Record<keyof MethodResult, 'median' | 'max'>>
