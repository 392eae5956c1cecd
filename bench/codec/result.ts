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
