/**
 * Adaptive range controller: picks the size of the next HTTP Range request and how many ranges to keep in
 * flight, from what completed ranges measured. BBR-like: the bottleneck bandwidth is a windowed max of
 * delivery-rate samples, the latency a windowed min of time-to-first-byte, and the bytes we keep requested
 * are that bandwidth times a "range horizon" times a phase gain (startup, drain, probe cycle).
 *
 * Pure: no I/O, no clock. Every time is a caller-supplied millisecond timestamp (any monotonic origin).
 * See docs/decisions/0007-adaptive-range-controller.md for the reasoning behind the constants.
 */

export type RangeErrorKind = 'timeout' | 'reset' | 'http' | 'integrity'

/** Timing of one completed range, all in the caller's millisecond clock. */
export interface RangeSample {
  bytes: number
  startedAt: number
  firstByteAt: number
  finishedAt: number
}

export interface RangePlan {
  rangeBytes: number
  parallel: number
}

export interface HostSample {
  /** 1-minute load average divided by the number of cores. */
  loadPerCore: number
  freeMemBytes: number
}

export type Phase = 'startup' | 'drain' | 'probe'

/** What a previous session learned about the path; a `snapshot()` of it fits. */
export interface ControllerPrior {
  bandwidthBytesPerSec: number | null
  minRttMs: number | null
  parallel: number
}

export interface RangeControllerOptions {
  /** Every range size is a multiple of this (the delta stream's block size). */
  blockSize: number
  minRange?: number
  maxRange?: number
  minParallel?: number
  maxParallel?: number
  /** A range should last at least this many round trips so the request latency is amortised. */
  rangeRtts?: number
  /** ...and at least this long, so that on very short RTTs we do not issue thousands of requests. */
  minRangeMs?: number
  bwWindowSamples?: number
  bwWindowMs?: number
  rttWindowMs?: number
  errorCooldownMs?: number
  maxLoadPerCore?: number
  minFreeMemBytes?: number
  /** Share of free memory that buffered, not-yet-verified ranges may occupy. */
  memBudgetFraction?: number
  /**
   * Start from a previous session's estimates instead of probing up from the smallest range. They enter
   * the windows as samples taken at the first `next()`, so they age out like any other sample.
   */
  prior?: ControllerPrior
}

/** Why the last plan looks the way it does; JSON-friendly for `--json` output and logs. */
export interface Explanation {
  phase: Phase
  gain: number
  rangeBytes: number
  parallel: number
  bandwidthBytesPerSec: number | null
  minRttMs: number | null
  targetInflightBytes: number
  errorScale: number
  coolingDownUntil: number | null
  /** Constraints that changed the plan, in the order they applied, e.g. 'maxRange', 'errorBackoff'. */
  limitedBy: string[]
  reason: string
}

export interface ControllerSnapshot extends Explanation {
  rounds: number
  samples: number
  delivered: number
  fullBandwidthRounds: number
  probeCycleIndex: number
  /** Parallelism the probe cycle is centred on. */
  parallelLevel: number
  /** Measured goodput per parallelism level (level x smoothed per-range rate), bytes per second. */
  levelGoodputBytesPerSec: Record<string, number>
  host: HostSample | null
  lastError: { at: number; kind: RangeErrorKind } | null
}

const KiB = 1024
const MiB = 1024 * KiB

const DEFAULTS = {
  minRange: 64 * KiB,
  maxRange: 8 * MiB,
  minParallel: 1,
  maxParallel: 8,
  rangeRtts: 16,
  minRangeMs: 250,
  bwWindowSamples: 10,
  bwWindowMs: 10_000,
  rttWindowMs: 30_000,
  errorCooldownMs: 5_000,
  maxLoadPerCore: 1.5,
  minFreeMemBytes: 256 * MiB,
  memBudgetFraction: 0.25,
} as const

const STARTUP_GAIN = 2
/** Startup ends once three rounds in a row failed to grow the bandwidth estimate by this factor. */
const FULL_BW_GROWTH = 1.25
const FULL_BW_ROUNDS = 3
const DRAIN_GAIN = 0.75
/** One round probing up, one draining the probe's excess, six cruising. */
const PROBE_GAINS = [1.25, 0.75, 1, 1, 1, 1, 1, 1] as const
const CRUISE_INDEX = 2
const MIN_ERROR_SCALE = 1 / 16
/** Smoothing of each parallelism level's per-range goodput. */
const LEVEL_EWMA = 0.25
/** More parallel ranges are kept only while fewer would deliver less than this share of the best. */
const LEVEL_TOLERANCE = 0.9
/** Transfer durations below this are timer noise, not a rate. */
const MIN_TRANSFER_MS = 1
/** How long the delivered-bytes history behind rate samples reaches back. */
const DELIVERED_LOG_MS = 300_000

/** Windowed max (or min) over the last `maxSamples` samples younger than `maxAgeMs`. */
class WindowedExtreme {
  readonly #samples: { at: number; value: number }[] = []
  readonly #maxSamples: number
  readonly #maxAgeMs: number
  readonly #better: (a: number, b: number) => boolean

  constructor(kind: 'max' | 'min', maxSamples: number, maxAgeMs: number) {
    this.#maxSamples = maxSamples
    this.#maxAgeMs = maxAgeMs
    this.#better = kind === 'max' ? (a, b) => a > b : (a, b) => a < b
  }

  push(at: number, value: number): void {
    this.#samples.push({ at, value })
    if (this.#samples.length > this.#maxSamples) this.#samples.shift()
  }

  get size(): number {
    return this.#samples.length
  }

  /** Expired samples are dropped, except the newest: a stale estimate beats none. */
  best(now: number): number | undefined {
    while (this.#samples.length > 1 && now - this.#samples[0]!.at > this.#maxAgeMs) this.#samples.shift()
    let best: number | undefined
    for (const s of this.#samples) if (best === undefined || this.#better(s.value, best)) best = s.value
    return best
  }
}

function positiveInt(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${name} must be a positive integer`)
  return value
}

export class RangeController {
  readonly #block: number
  readonly #minRange: number
  readonly #maxRange: number
  readonly #minParallel: number
  readonly #maxParallel: number
  readonly #opts: Required<Omit<RangeControllerOptions, 'blockSize' | 'prior'>>
  #prior: ControllerPrior | undefined

  readonly #bw: WindowedExtreme
  readonly #rtt: WindowedExtreme
  readonly #levels = new Map<number, { rate: number; at: number }>()
  /** Changes of the planned parallelism, to credit each range to the level it was issued under. */
  readonly #planLog: { at: number; parallel: number }[] = []
  #level: number
  readonly #deliveredLog: { at: number; delivered: number }[] = []
  #delivered = 0
  #forgottenDelivered = 0

  #phase: Phase = 'startup'
  #roundStart = Number.NEGATIVE_INFINITY
  #rounds = 0
  #fullBw = 0
  #fullBwRounds = 0
  #cycleIndex = CRUISE_INDEX
  #errorScale = 1
  #cooldownUntil: number | null = null
  #lastError: { at: number; kind: RangeErrorKind } | null = null
  #host: HostSample | null = null
  #last: Explanation

  constructor(options: RangeControllerOptions) {
    const { prior, ...rest } = options
    const o = { ...DEFAULTS, ...rest }
    this.#opts = o
    this.#prior = prior
    this.#block = positiveInt('blockSize', o.blockSize)
    positiveInt('minRange', o.minRange)
    positiveInt('maxRange', o.maxRange)
    this.#minParallel = positiveInt('minParallel', o.minParallel)
    this.#maxParallel = positiveInt('maxParallel', o.maxParallel)
    if (o.minRange > o.maxRange) throw new RangeError('minRange must not exceed maxRange')
    if (o.minParallel > o.maxParallel) throw new RangeError('minParallel must not exceed maxParallel')
    // Bounds snap inward to whole blocks; a block larger than maxRange still has to be fetched whole.
    this.#maxRange = Math.max(this.#block, Math.floor(o.maxRange / this.#block) * this.#block)
    this.#minRange = Math.min(this.#maxRange, Math.ceil(o.minRange / this.#block) * this.#block)
    this.#bw = new WindowedExtreme('max', o.bwWindowSamples, o.bwWindowMs)
    this.#level = this.#minParallel
    this.#rtt = new WindowedExtreme('min', 64, o.rttWindowMs)
    this.#last = this.#plan(0)
  }

  /** The plan for ranges issued at `now`; callers ask again after every completion or error. */
  next(now: number): RangePlan {
    if (this.#prior !== undefined) this.#applyPrior(now, this.#prior)
    this.#last = this.#plan(now)
    const previous = this.#planLog.at(-1)
    if (previous === undefined || previous.parallel !== this.#last.parallel) {
      this.#planLog.push({ at: now, parallel: this.#last.parallel })
      while (this.#planLog.length > 1 && now - this.#planLog[0]!.at > DELIVERED_LOG_MS) this.#planLog.shift()
    }
    return { rangeBytes: this.#last.rangeBytes, parallel: this.#last.parallel }
  }

  onRangeComplete(sample: RangeSample): void {
    const { bytes, startedAt, firstByteAt, finishedAt } = sample
    if (!(bytes > 0) || !(finishedAt >= firstByteAt) || !(firstByteAt >= startedAt)) {
      throw new RangeError('range sample must have bytes > 0 and startedAt <= firstByteAt <= finishedAt')
    }
    const deliveredBefore = this.#deliveredAt(startedAt)
    this.#delivered += bytes
    this.#deliveredLog.push({ at: finishedAt, delivered: this.#delivered })
    while (this.#deliveredLog.length > 1 && finishedAt - this.#deliveredLog[0]!.at > DELIVERED_LOG_MS) {
      this.#forgottenDelivered = this.#deliveredLog.shift()!.delivered
    }

    // Delivery rate over this range's lifetime counts every byte that completed meanwhile, so with several
    // ranges in flight it measures the aggregate the link gave us, not this range's share (as BBR does).
    // Completions are coarse, so a short range that overlaps a big one's completion would claim the big
    // one's bytes as its own; no more ranges than planned can have shared the link at this range's rate.
    const elapsed = Math.max(finishedAt - startedAt, MIN_TRANSFER_MS)
    const level = this.#parallelAt(startedAt)
    const transferRate = bytes / Math.max(finishedAt - firstByteAt, MIN_TRANSFER_MS)
    const aggregate = (this.#delivered - deliveredBefore) / elapsed
    this.#bw.push(finishedAt, Math.min(aggregate, transferRate * level))
    // Per-level goodput, request latency included: that latency is what parallel ranges hide.
    const stat = this.#levels.get(level)
    const rate = bytes / elapsed
    this.#levels.set(level, {
      rate: stat === undefined ? rate : stat.rate + LEVEL_EWMA * (rate - stat.rate),
      at: finishedAt,
    })
    this.#rtt.push(finishedAt, firstByteAt - startedAt)

    // A round ends when a range issued after the previous round ended comes back.
    if (startedAt >= this.#roundStart) {
      this.#roundStart = finishedAt
      this.#onRoundEnd(finishedAt)
    }
  }

  onRangeError(now: number, kind: RangeErrorKind): void {
    this.#lastError = { at: now, kind }
    this.#errorScale = Math.max(MIN_ERROR_SCALE, this.#errorScale / 2)
    this.#cooldownUntil = now + this.#opts.errorCooldownMs
  }

  onHostSample(sample: HostSample): void {
    this.#host = { loadPerCore: sample.loadPerCore, freeMemBytes: sample.freeMemBytes }
  }

  explain(): Explanation {
    return { ...this.#last, limitedBy: [...this.#last.limitedBy] }
  }

  snapshot(): ControllerSnapshot {
    return {
      ...this.explain(),
      rounds: this.#rounds,
      samples: this.#bw.size,
      delivered: this.#delivered,
      fullBandwidthRounds: this.#fullBwRounds,
      probeCycleIndex: this.#cycleIndex,
      parallelLevel: this.#level,
      levelGoodputBytesPerSec: Object.fromEntries(
        [...this.#levels].map(([level, stat]) => [String(level), Math.round(level * stat.rate * 1000)]),
      ),
      host: this.#host === null ? null : { ...this.#host },
      lastError: this.#lastError === null ? null : { ...this.#lastError },
    }
  }

  /** Bytes completed by time `at`; older than the kept history, the newest forgotten total (an undercount). */
  #deliveredAt(at: number): number {
    for (let i = this.#deliveredLog.length - 1; i >= 0; i--) {
      const entry = this.#deliveredLog[i]!
      if (entry.at <= at) return entry.delivered
    }
    return this.#forgottenDelivered
  }

  #parallelAt(at: number): number {
    for (let i = this.#planLog.length - 1; i >= 0; i--) {
      const entry = this.#planLog[i]!
      if (entry.at <= at) return entry.parallel
    }
    return this.#planLog[0]?.parallel ?? this.#minParallel
  }

  /**
   * The fewest parallel ranges whose measured goodput (level x mean per-range rate) is within
   * LEVEL_TOLERANCE of the best recently measured level: more connections only when they pay.
   */
  #bestLevel(now: number): number {
    let best = 0
    const fresh: [number, number][] = []
    for (const [level, stat] of this.#levels) {
      if (now - stat.at > this.#opts.bwWindowMs * 3 && level !== this.#level) continue
      const goodput = level * stat.rate
      fresh.push([level, goodput])
      best = Math.max(best, goodput)
    }
    fresh.sort((a, b) => a[0] - b[0])
    for (const [level, goodput] of fresh) if (goodput >= best * LEVEL_TOLERANCE) return level
    return this.#level
  }

  #applyPrior(now: number, prior: ControllerPrior): void {
    this.#prior = undefined
    const bw = prior.bandwidthBytesPerSec
    const rtt = prior.minRttMs
    // A prior without both estimates (or with nonsense) is ignored: startup is the safe default.
    if (bw === null || rtt === null || !(bw > 0) || !(rtt >= 0) || !Number.isFinite(bw + rtt)) return
    this.#bw.push(now, bw / 1000)
    this.#rtt.push(now, rtt)
    this.#fullBw = bw / 1000
    this.#level = Math.min(this.#maxParallel, Math.max(this.#minParallel, Math.round(prior.parallel) || 1))
    this.#enterProbe()
  }

  #onRoundEnd(now: number): void {
    this.#rounds++
    const bw = this.#bw.best(now) ?? 0
    if (this.#phase === 'startup') {
      if (bw >= this.#fullBw * FULL_BW_GROWTH) {
        this.#fullBw = bw
        this.#fullBwRounds = 0
        this.#level = Math.min(this.#maxParallel, this.#level * 2)
      } else if (++this.#fullBwRounds >= FULL_BW_ROUNDS) {
        this.#phase = 'drain'
        this.#level = this.#bestLevel(now)
      }
    } else if (this.#phase === 'drain') {
      this.#enterProbe()
    } else {
      this.#cycleIndex = (this.#cycleIndex + 1) % PROBE_GAINS.length
      this.#level = this.#bestLevel(now)
    }
    // After the cool-down the backoff unwinds one doubling per round.
    if (this.#cooldownUntil !== null && now >= this.#cooldownUntil) {
      this.#errorScale = Math.min(1, this.#errorScale * 2)
      if (this.#errorScale === 1) this.#cooldownUntil = null
    }
  }

  #enterProbe(): void {
    this.#phase = 'probe'
    this.#cycleIndex = CRUISE_INDEX
  }

  #gain(now: number): number {
    if (this.#phase === 'startup') return STARTUP_GAIN
    if (this.#phase === 'drain') return DRAIN_GAIN
    const gain = PROBE_GAINS[this.#cycleIndex]!
    // No probing up while cooling down from an error.
    return this.#cooldownUntil !== null && now < this.#cooldownUntil ? Math.min(gain, 1) : gain
  }

  #plan(now: number): Explanation {
    const limitedBy: string[] = []
    const reasons: string[] = []
    const gain = this.#gain(now)
    const bw = this.#bw.best(now)
    const rtt = this.#rtt.best(now)

    let target: number
    let parallel: number
    if (bw === undefined || rtt === undefined) {
      target = this.#minRange * this.#minParallel
      parallel = this.#minParallel
      reasons.push('no samples yet: starting at the smallest range')
    } else {
      // Parallelism probes with the gain cycle: one more range while probing up, one fewer while draining.
      parallel = this.#phase === 'probe' && gain !== 1 ? this.#level + Math.sign(gain - 1) : this.#level
      const horizonMs = Math.max(this.#opts.rangeRtts * rtt, this.#opts.minRangeMs)
      target = gain * bw * horizonMs
      reasons.push(
        `${this.#phase}: gain ${gain} x ${Math.round(bw * 1000)} B/s x ${Math.round(horizonMs)} ms horizon`,
      )
    }

    if (parallel > this.#maxParallel) {
      parallel = this.#maxParallel
      limitedBy.push('maxParallel')
    } else if (parallel < this.#minParallel) {
      parallel = this.#minParallel
    }

    // Back-offs shrink what is in flight: first the range size, then, once ranges are at the minimum, the
    // number of ranges. Without back-off, ranges below the minimum just round up.
    let shrink = false
    if (this.#errorScale < 1) {
      target *= this.#errorScale
      shrink = true
      limitedBy.push('errorBackoff')
      reasons.push(`backing off x${this.#errorScale} after ${this.#lastError?.kind ?? 'an'} error`)
    }
    const host = this.#host
    if (host !== null && host.loadPerCore > this.#opts.maxLoadPerCore) {
      // Fewer concurrent ranges means fewer sockets and less hashing/decompression at once.
      parallel = Math.max(this.#minParallel, Math.floor(parallel / 2))
      target /= 2
      shrink = true
      limitedBy.push('hostLoad')
      reasons.push(`host load ${host.loadPerCore.toFixed(2)}/core above ${this.#opts.maxLoadPerCore}`)
    }
    if (host !== null) {
      const low = host.freeMemBytes < this.#opts.minFreeMemBytes
      const budget = host.freeMemBytes * this.#opts.memBudgetFraction * (low ? 0.5 : 1)
      if (low || target > budget) {
        target = Math.min(target, budget)
        shrink = true
        limitedBy.push('lowMemory')
        reasons.push(`memory budget ${Math.round(budget)} B of ${host.freeMemBytes} B free`)
      }
    }
    if (shrink && target < parallel * this.#minRange) {
      parallel = Math.max(this.#minParallel, Math.floor(target / this.#minRange))
    }

    let rangeBytes = Math.floor(target / parallel / this.#block) * this.#block
    if (rangeBytes < this.#minRange) {
      rangeBytes = this.#minRange
      limitedBy.push('minRange')
    } else if (rangeBytes > this.#maxRange) {
      rangeBytes = this.#maxRange
      limitedBy.push('maxRange')
    }

    return {
      phase: this.#phase,
      gain,
      rangeBytes,
      parallel,
      bandwidthBytesPerSec: bw === undefined ? null : bw * 1000,
      minRttMs: rtt ?? null,
      targetInflightBytes: Math.round(target),
      errorScale: this.#errorScale,
      coolingDownUntil: this.#cooldownUntil,
      limitedBy,
      reason: reasons.join('; '),
    }
  }
}
