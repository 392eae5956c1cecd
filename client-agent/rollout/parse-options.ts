import { InvalidArgumentError } from 'commander'
import { IsoDateTime } from '../../schemas/common.ts'
import { MAX_STAGES } from '../../schemas/rollout.ts'

/** CLI option parsers for `deltaport rollout start` (commander calls them; they throw usage errors). */

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const

/** `90s`, `30m`, `1h`, `2d`, `500ms`. */
export function parseDuration(value: string): number {
  const match = /^(\d{1,7})(ms|s|m|h|d)$/.exec(value.trim())
  if (!match) throw new InvalidArgumentError(`"${value}" is not a duration like 30m, 1h or 2d`)
  return Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS]
}

/** One duration for every stage, or a comma list with one per stage. */
export function parseDurations(value: string): number[] {
  return value.split(',').map(parseDuration)
}

/** `1,10,50,100` (percent per stage). */
export function parseStages(value: string): number[] {
  const parts = value.split(',')
  if (parts.length === 0 || parts.length > MAX_STAGES)
    throw new InvalidArgumentError(`1 to ${MAX_STAGES} comma-separated percentages`)
  return parts.map((p) => {
    if (!/^\d{1,3}(\.\d{1,4})?$/.test(p.trim()) || Number(p) > 100)
      throw new InvalidArgumentError(`"${p}" is not a percentage from 0 to 100`)
    return Number(p)
  })
}

/** `0.05` or `5%`. */
export function parseRate(value: string): number {
  const percent = value.trim().endsWith('%')
  const text = percent ? value.trim().slice(0, -1) : value.trim()
  if (!/^\d{1,3}(\.\d{1,6})?$/.test(text))
    throw new InvalidArgumentError(`"${value}" is not a rate like 0.05 or 5%`)
  const rate = percent ? Number(text) / 100 : Number(text)
  if (!(rate > 0 && rate < 1)) throw new InvalidArgumentError('the rate must be between 0 and 1 (exclusive)')
  return rate
}

export function parseCount(value: string): number {
  if (!/^\d{1,7}$/.test(value)) throw new InvalidArgumentError(`"${value}" is not a whole number`)
  return Number(value)
}

/** An ISO time (`2026-12-01T09:00:00Z`) or `+<duration>` from now. */
export function parseStartAt(value: string, now = Date.now()): string {
  if (value.startsWith('+')) return new Date(now + parseDuration(value.slice(1))).toISOString()
  if (!IsoDateTime.safeParse(value).success)
    throw new InvalidArgumentError(`"${value}" is not an ISO time (with Z or an offset) or +duration`)
  return value
}

/** Pairs percentages with durations (one for all, or one each). */
export function stagesFrom(
  percents: number[],
  durations: number[],
): { percent: number; durationMs: number }[] {
  if (durations.length !== 1 && durations.length !== percents.length) {
    throw new InvalidArgumentError(
      `--stage-duration needs one duration or ${percents.length} (one per stage), got ${durations.length}`,
    )
  }
  return percents.map((percent, i) => ({
    percent,
    durationMs: durations[durations.length === 1 ? 0 : i] ?? 0,
  }))
}
