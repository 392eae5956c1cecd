import { DurableObject } from 'cloudflare:workers'
import { z } from 'zod'
import { ClientId } from '../schemas/client.ts'
import { ArtifactName, ChannelName, IsoDateTime, Version } from '../schemas/common.ts'
import {
  MAX_HISTORY,
  type OutcomeCounts,
  type OutcomeReceipt,
  type RolloutCheck,
  RolloutControl,
  type RolloutHistoryEvent,
  RolloutOutcome,
  type RolloutOutcomeKind,
  type RolloutPrefetchHint,
  RolloutRecord,
  RolloutSpec,
  type RolloutSpecInput,
  type RolloutStatus,
} from '../schemas/rollout.ts'
import { createMetaTable, readMeta, writeMeta } from './meta-table.ts'
import { takeToken } from './rate-limit.ts'
import {
  admissionStage,
  cohortPosition,
  emptyCounts,
  expectedStageStart,
  failureStats,
} from './rollout-schedule.ts'
import { parseStoredJson } from './stored-json.ts'

/** The meta row holding this object's RolloutRecord. */
const RECORD_KEY = 'rollout'
/**
 * The meta row holding when the newest signed control statement this object acted on was signed (epoch
 * ms, ADR 0038). It outlives the rollout record, so a statement captured under one rollout cannot be
 * replayed against the next one.
 */
const LAST_SIGNED_KEY = 'lastSignedControlAt'
/**
 * Meta rows `yanked:<version>`: the yank state of a version as this object last heard it from the yank
 * route (a YankMark). The start route checks the index first, but a yank landing between that read and
 * `start` would otherwise leave a rollout of a yanked version running (ADR 0024).
 */
const yankedKey = (version: string) => `yanked:${version}`

/**
 * A version's yank state with the index revision that set it (VersionEntry.yankRevision). A yank and a
 * restore of the same version may reach this object in the other order than they changed the index;
 * the revision lets the later index change win here too, so the mark never contradicts the index.
 */
const YankMark = z.object({
  revision: z.number().int().nonnegative(),
  /** The yank's reason while yanked; null once restored. */
  yanked: z.string().nullable(),
})
type YankMark = z.infer<typeof YankMark>
const YankRevision = z.number().int().nonnegative()
/** What the yank route says, parsed before it is stored as a `yanked:<version>` row. */
const YankInput = z.object({ version: Version, reason: z.string(), revision: YankRevision })

/** Outcome posts per client per minute: enough for installed → rolled-back, too few to churn storage. */
export const OUTCOMES_PER_CLIENT_PER_MINUTE = 6

/**
 * Reporting clients one rollout keeps (a row each). Client ids are self-chosen unless devices must
 * enroll, and the bucket is per id, so fresh ids would add rows without end. Beyond this, a new
 * reporter takes the place of the client whose `installed` report is oldest: failures are never
 * forgotten, so the cap can only tilt the statistics toward a halt (the safe side), and a real failure
 * is always heard. Far above what the Wilson bound needs (at 100 000 samples it is within 0.2 points).
 */
export const MAX_REPORTING_CLIENTS = 1_000_000

/** An RPC answer: errors travel as values because custom Error fields do not survive RPC. */
export type RolloutResult<T> =
  | { ok: true; value: T }
  | { ok: false; status: 404 | 409 | 429; detail: string; retryAfterSeconds?: number }

const StartInput = z.object({
  name: ArtifactName,
  channel: ChannelName,
  spec: RolloutSpec,
  signedAt: IsoDateTime.optional(),
})
/** When the maintainers signed the statement a control request came with (absent: the token alone). */
const SignedAt = IsoDateTime.optional()
const HintInput = z.object({ clientId: ClientId, lookAheadMs: z.number().int().nonnegative() })

const iso = (ms: number) => new Date(ms).toISOString()
const ACTIVE = new Set(['scheduled', 'running', 'paused'])

const log = (fields: Record<string, unknown>) =>
  console.log(JSON.stringify({ do: 'RolloutCoordinator', ...fields }))

interface OutcomeRow extends Record<string, SqlStorageValue> {
  outcome: string | null
  tokens: number
  refilled_at: number
}

/** The coordinator of one artifact and channel: the one naming rule every caller uses. */
export function rolloutCoordinator(env: Env, name: string, channel: string) {
  return env.ROLLOUT_COORDINATOR.get(env.ROLLOUT_COORDINATOR.idFromName(`${name}/${channel}`))
}

/**
 * One per artifact and channel (`idFromName(`${name}/${channel}`)`). Holds the current rollout plan (one
 * JSON row) and one row per reporting client (its latest outcome and its rate bucket), advances stages on
 * alarms and halts itself when a cohort's failure rate is above the limit by the Wilson lower bound.
 */
export class RolloutCoordinator extends DurableObject<Env> {
  private readonly sql: SqlStorage
  private record: RolloutRecord | null = null
  /** Whether the tables exist: they are made by the first start, never for a pair only asked about. */
  private hasTables = false
  /**
   * Whether the armed alarm is known to match the record's pending change (checked by this instance,
   * or set by a commit that completed). False from construction and while a commit is under way, so a
   * commit whose record landed but whose alarm did not is repaired by the next access (syncAlarm).
   */
  private alarmInSync = false

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env)
    this.sql = ctx.storage.sql
    ctx.blockConcurrencyWhile(async () => {
      // Nothing is written before a rollout is started here: every client may ask about (or report on)
      // any name and channel, each pair is an object of its own, and tables created on construction
      // would leave storage behind for every pair ever asked about. Reads find no record instead.
      const started = this.sql
        .exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
        .toArray()
      if (started.length === 0) return
      this.createTables()
      const stored = readMeta(this.sql, RECORD_KEY)
      if (stored === null) return
      // A record this code cannot read (an older shape) is dropped loudly rather than bricking the object.
      this.record = parseStoredJson(stored, RolloutRecord)
      if (this.record === null) log({ level: 'error', msg: 'unreadable rollout record dropped' })
      // No syncAlarm here: the wake may be the alarm's own, and getAlarm() reads null while an alarm
      // runs (Cloudflare's alarms API), which would re-arm it falsely. The first call checks instead.
    })
  }

  /**
   * Re-arms the alarm when it does not match the record's pending change: a rollout whose record was
   * committed but whose alarm was lost (a fault between the two writes, ADR 0010 amended 2026-11-26)
   * would otherwise never advance. Run at the start of every call (after every wake: eviction or a
   * reset); one getAlarm per instance, none once known in sync. Never inside the alarm (see alarm()).
   */
  private async syncAlarm(): Promise<void> {
    if (this.alarmInSync) return
    const due = this.record?.nextChangeAt ?? null
    const armed = await this.ctx.storage.getAlarm()
    if (due !== null && armed !== due) {
      log({ level: 'warn', msg: 'rollout alarm re-armed', armed, due })
      await this.ctx.storage.setAlarm(due)
    }
    // No pending change with an alarm armed: the alarm finds nothing to do and is harmless.
    this.alarmInSync = true
  }

  /** The object's tables; created by the first start (and kept current on later constructions). */
  private createTables(): void {
    this.hasTables = true
    createMetaTable(this.sql)
    this.sql.exec(`CREATE TABLE IF NOT EXISTS outcomes (
        client_id TEXT PRIMARY KEY,
        stage INTEGER NOT NULL,
        outcome TEXT,
        error_class TEXT,
        at INTEGER NOT NULL,
        tokens REAL NOT NULL,
        refilled_at INTEGER NOT NULL
      )`)
    this.sql.exec(
      'CREATE INDEX IF NOT EXISTS outcomes_error_class ON outcomes (error_class) WHERE error_class IS NOT NULL',
    )
    // The oldest `installed` report, the one a new reporter replaces once MAX_REPORTING_CLIENTS are kept.
    this.sql.exec(
      "CREATE INDEX IF NOT EXISTS outcomes_installed_at ON outcomes (at) WHERE outcome = 'installed'",
    )
    // Reporting clients per (stage, outcome), kept in step with \`outcomes\` so a halt check or a status
    // read costs a few rows, not a scan of every client.
    this.sql.exec(`CREATE TABLE IF NOT EXISTS tallies (
        stage INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (stage, outcome)
      )`)
  }

  // ---- maintainer RPC ------------------------------------------------------------------------------

  /**
   * Schedules a rollout (the caller checked the version is published). Refused while another one is
   * scheduled, running or paused; a finished, halted or aborted one is replaced with its outcomes.
   */
  async start(input: {
    name: string
    channel: string
    spec: RolloutSpecInput
    signedAt?: string
  }): Promise<RolloutResult<RolloutStatus>> {
    const { name, channel, spec, signedAt } = StartInput.parse(input)
    await this.syncAlarm()
    const now = Date.now()
    const replayed = this.replayedStatement(signedAt)
    if (replayed) return replayed
    const yanked = this.yankMark(spec.version)?.yanked ?? null
    if (yanked !== null)
      return conflict(
        `${name}@${spec.version} was yanked while this start was on its way (${yanked}); restore it first, or roll out a fixed version`,
      )
    const previous = this.record
    if (previous !== null && ACTIVE.has(previous.state)) {
      return {
        ok: false,
        status: 409,
        detail: `a rollout of ${previous.name}@${previous.spec.version} is ${previous.state}; abort it first`,
      }
    }
    const startAt = spec.startAt === undefined ? now : Math.max(now, Date.parse(spec.startAt))
    const record: RolloutRecord = {
      name,
      channel,
      spec,
      state: 'scheduled',
      createdAt: now,
      startAt,
      currentStage: null,
      stageStartedAt: spec.stages.map(() => null),
      nextChangeAt: startAt,
      pausedRemainingMs: null,
      haltedReason: null,
      history: [],
    }
    this.createTables()
    this.sql.exec('DELETE FROM outcomes')
    this.sql.exec('DELETE FROM tallies')
    this.event(record, now, 'scheduled', undefined, `${spec.version} from ${iso(startAt)}`, signedAt)
    if (startAt <= now) this.enterStage(record, 0, now)
    await this.commit(record, signedAt)
    log({ level: 'info', msg: 'rollout scheduled', name, channel, version: spec.version })
    return { ok: true, value: this.statusOf(record) }
  }

  async pause(control: unknown = {}, signed?: string): Promise<RolloutResult<RolloutStatus>> {
    await this.syncAlarm()
    const { reason } = RolloutControl.parse(control)
    const signedAt = SignedAt.parse(signed)
    const now = Date.now()
    const record = this.record
    if (record === null) return notFound()
    const replayed = this.replayedStatement(signedAt)
    if (replayed) return replayed
    if (record.state !== 'running' && record.state !== 'scheduled')
      return conflict(`cannot pause a ${record.state} rollout`)
    record.pausedRemainingMs = Math.max(0, (record.nextChangeAt ?? now) - now)
    record.nextChangeAt = null
    record.state = 'paused'
    this.event(record, now, 'paused', record.currentStage ?? undefined, reason, signedAt)
    await this.commit(record, signedAt)
    return { ok: true, value: this.statusOf(record) }
  }

  /** Continues a paused rollout with the time its pending stage had left. Halted ones do not resume. */
  async resume(signed?: string): Promise<RolloutResult<RolloutStatus>> {
    await this.syncAlarm()
    const signedAt = SignedAt.parse(signed)
    const now = Date.now()
    const record = this.record
    if (record === null) return notFound()
    const replayed = this.replayedStatement(signedAt)
    if (replayed) return replayed
    if (record.state !== 'paused') {
      return conflict(
        record.state === 'halted'
          ? 'a halted rollout does not resume: start a new one (a fixed version, or a higher threshold)'
          : `cannot resume a ${record.state} rollout`,
      )
    }
    record.state = record.currentStage === null ? 'scheduled' : 'running'
    record.nextChangeAt = now + (record.pausedRemainingMs ?? 0)
    record.pausedRemainingMs = null
    this.event(record, now, 'resumed', record.currentStage ?? undefined, undefined, signedAt)
    await this.commit(record, signedAt)
    return { ok: true, value: this.statusOf(record) }
  }

  /** Stops for good: nobody new is admitted, and agents not yet updated stay where they are. */
  async abort(control: unknown = {}, signed?: string): Promise<RolloutResult<RolloutStatus>> {
    await this.syncAlarm()
    const { reason } = RolloutControl.parse(control)
    const signedAt = SignedAt.parse(signed)
    const now = Date.now()
    const record = this.record
    if (record === null) return notFound()
    const replayed = this.replayedStatement(signedAt)
    if (replayed) return replayed
    if (!ACTIVE.has(record.state)) return conflict(`the rollout is already ${record.state}`)
    record.state = 'aborted'
    record.nextChangeAt = null
    record.pausedRemainingMs = null
    this.event(record, now, 'aborted', record.currentStage ?? undefined, reason, signedAt)
    await this.commit(record, signedAt)
    return { ok: true, value: this.statusOf(record) }
  }

  /**
   * The yank route says `version` is yanked: remembers it, so a start of it that read the index before
   * the yank is refused whichever of the two reaches this object first, and aborts the rollout only if
   * it rolls out `version` and is still active (a yanked version must not reach more devices). Checked
   * and done in one call, so a rollout of another version started meanwhile is never aborted by
   * mistake. Resolves to whether it aborted.
   */
  async abortVersion(yanked: string, why: string, revised = 0): Promise<boolean> {
    const { version, reason, revision } = YankInput.parse({ version: yanked, reason: why, revision: revised })
    // A restore the index recorded after this yank has already been heard: the version is not yanked.
    if (!this.noteYankState(version, revision, reason.slice(0, 200))) return false
    const record = this.record
    if (record === null || record.spec.version !== version || !ACTIVE.has(record.state)) return false
    return (await this.abort({ reason: reason.slice(0, 200) })).ok
  }

  /**
   * The restore route says `version` is no longer yanked: it may be rolled out again, unless a yank the
   * index recorded after this restore has been heard already.
   */
  async restoreVersion(restored: string, revised = 0): Promise<void> {
    const { version, revision } = YankInput.parse({ version: restored, reason: '', revision: revised })
    this.noteYankState(version, revision, null)
  }

  /** The stored yank state of `version`; a row of the older shape (the bare reason) counts as revision 0. */
  private yankMark(version: string): YankMark | null {
    const stored = this.hasTables ? readMeta(this.sql, yankedKey(version)) : null
    if (stored === null) return null
    return parseStoredJson(stored, YankMark) ?? { revision: 0, yanked: stored }
  }

  /**
   * Records `yanked` (a reason, or null for restored) unless this object already heard of a later index
   * revision of the version; whether it did. Equal revisions are the same index change told twice.
   */
  private noteYankState(version: string, revision: number, yanked: string | null): boolean {
    const current = this.yankMark(version)
    if (current !== null && current.revision > revision) return false
    this.createTables()
    writeMeta(this.sql, yankedKey(version), JSON.stringify({ revision, yanked } satisfies YankMark))
    return true
  }

  async status(): Promise<RolloutResult<RolloutStatus>> {
    await this.syncAlarm()
    if (this.record === null) return notFound()
    return { ok: true, value: this.statusOf(this.record) }
  }

  // ---- agent RPC -----------------------------------------------------------------------------------

  /** Is this client in, which version should it run, and when does its stage begin. */
  async check(clientId: string): Promise<RolloutResult<RolloutCheck>> {
    await this.syncAlarm()
    const client = ClientId.parse(clientId)
    const record = this.record
    if (record === null) return notFound()
    const stage = admissionStage(record.spec.stages, this.positionOf(record, client))
    const isIn = this.admitted(record, stage) && !['halted', 'aborted', 'scheduled'].includes(record.state)
    const expected =
      !isIn && stage !== null && record.nextChangeAt !== null
        ? expectedStageStart(record.spec.stages, record.currentStage, record.nextChangeAt, stage)
        : null
    return {
      ok: true,
      value: {
        name: record.name,
        channel: record.channel,
        state: record.state,
        targetVersion: record.spec.version,
        in: isIn,
        version: isIn ? record.spec.version : null,
        stage,
        stageExpectedAt: expected === null ? null : iso(expected),
      },
    }
  }

  /**
   * Records an agent's outcome. Only clients the rollout admitted count, each once (its latest outcome),
   * and each client is rate-limited, so a single client can neither halt a rollout nor churn storage.
   */
  async report(input: unknown): Promise<RolloutResult<OutcomeReceipt>> {
    await this.syncAlarm()
    const outcome = RolloutOutcome.parse(input)
    const now = Date.now()
    const record = this.record
    if (record === null) return notFound()
    if (outcome.version !== record.spec.version)
      return conflict(`this rollout ships ${record.spec.version}, not ${outcome.version}`)
    const stage = admissionStage(record.spec.stages, this.positionOf(record, outcome.client))
    if (stage === null || !this.admitted(record, stage))
      return conflict('this client has not been admitted to the rollout')

    const row = this.sql
      .exec<OutcomeRow>(
        'SELECT outcome, tokens, refilled_at FROM outcomes WHERE client_id = ?',
        outcome.client,
      )
      .toArray()[0]
    const taken = takeToken(
      row === undefined ? undefined : { tokens: row.tokens, refilledAt: row.refilled_at },
      OUTCOMES_PER_CLIENT_PER_MINUTE,
      now,
    )
    if (!taken.ok) {
      this.sql.exec(
        'UPDATE outcomes SET tokens = ?, refilled_at = ? WHERE client_id = ?',
        taken.bucket.tokens,
        taken.bucket.refilledAt,
        outcome.client,
      )
      return {
        ok: false,
        status: 429,
        detail: 'outcome rate limit for this client exceeded',
        retryAfterSeconds: taken.retryAfterSeconds,
      }
    }
    const counted = row?.outcome !== outcome.outcome
    const previous = row?.outcome ?? null
    // A new reporter at the cap replaces the oldest `installed` one (none left: it is not recorded).
    const replaced = row === undefined ? this.replaceableAtCap() : null
    if (replaced === false)
      return conflict(`this rollout already keeps the outcomes of ${MAX_REPORTING_CLIENTS} clients`)
    this.ctx.storage.transactionSync(() => {
      if (replaced !== null) {
        this.sql.exec('DELETE FROM outcomes WHERE client_id = ?', replaced.client_id)
        this.tally(replaced.stage, 'installed', -1)
      }
      if (counted && previous !== null) this.tally(stage, previous, -1)
      if (counted) this.tally(stage, outcome.outcome, 1)
      this.sql.exec(
        `INSERT INTO outcomes (client_id, stage, outcome, error_class, at, tokens, refilled_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (client_id) DO UPDATE SET stage = excluded.stage, outcome = excluded.outcome,
           error_class = excluded.error_class, at = excluded.at, tokens = excluded.tokens,
           refilled_at = excluded.refilled_at`,
        outcome.client,
        stage,
        outcome.outcome,
        outcome.outcome === 'installed' ? null : (outcome.errorClass ?? null),
        now,
        taken.bucket.tokens,
        taken.bucket.refilledAt,
      )
    })
    if (counted && outcome.outcome !== 'installed') await this.haltIfFailing(record, now)
    return { ok: true, value: { counted, stage, state: record.state } }
  }

  /**
   * For the prefetcher (RegionAggregator): stage the target for a client that is in, or that the next
   * stage (or a stage starting within `lookAheadMs`) admits; hold back everyone else. Null: no rollout.
   */
  async prefetchHint(input: { clientId: string; lookAheadMs: number }): Promise<RolloutPrefetchHint | null> {
    await this.syncAlarm()
    const { clientId, lookAheadMs } = HintInput.parse(input)
    const record = this.record
    if (record === null) return null
    const now = Date.now()
    const version = record.spec.version
    const hold: RolloutPrefetchHint = { action: 'hold', version }
    // A completed rollout no longer constrains anything: the channel decides again.
    if (record.state === 'completed') return null
    if (record.state === 'halted' || record.state === 'aborted') return hold
    const stage = admissionStage(record.spec.stages, this.positionOf(record, clientId))
    if (stage === null) return hold
    if (this.admitted(record, stage) && record.state !== 'scheduled') {
      // In already: installable since its stage began (a past time, never "later").
      return { action: 'stage', version, at: Math.min(now, record.stageStartedAt[stage] ?? now) }
    }
    if (record.nextChangeAt === null) return hold
    const at = expectedStageStart(record.spec.stages, record.currentStage, record.nextChangeAt, stage)
    const next = record.currentStage === null ? 0 : record.currentStage + 1
    return stage === next || at <= now + lookAheadMs ? { action: 'stage', version, at } : hold
  }

  // ---- alarm ---------------------------------------------------------------------------------------

  /**
   * The pending change is due: the first stage, the next stage, or completion after the last. `info` is
   * the runtime's (absent when a test runs the alarm directly).
   */
  override async alarm(info?: AlarmInvocationInfo): Promise<void> {
    // The running alarm is the armed one, and getAlarm() reads null until setAlarm is called in it:
    // checking here (or in a call interleaved with it) would log a false "re-armed" and set an alarm in
    // the past. The handler leaves the record's next change armed (commit, or the retry branch below),
    // or throws and is retried by the runtime.
    this.alarmInSync = true
    const record = this.record
    if (record === null) return
    // Alarms are at-least-once: a delivery retried after a failure that came once its writes had
    // landed is for a change already made (it was scheduled before the pending one). Acting on it
    // would skip a stage, e.g. 1 % straight to 50 %; keep the pending change armed instead.
    if (info !== undefined && record.nextChangeAt !== null && info.scheduledTime < record.nextChangeAt) {
      await this.ctx.storage.setAlarm(record.nextChangeAt)
      return
    }
    const now = Date.now()
    if (record.state === 'scheduled') this.enterStage(record, 0, now)
    else if (record.state === 'running') {
      const current = record.currentStage ?? 0
      if (current + 1 < record.spec.stages.length) this.enterStage(record, current + 1, now)
      else {
        record.state = 'completed'
        record.nextChangeAt = null
        this.event(record, now, 'completed', current)
      }
    } else return
    await this.commit(record)
    log({ level: 'info', msg: 'rollout advanced', name: record.name, state: record.state })
  }

  // ---- internals -----------------------------------------------------------------------------------

  private positionOf(record: RolloutRecord, clientId: string): number {
    return cohortPosition(record.name, record.spec.version, clientId)
  }

  /** The stage in force admits `stage`'s cohort (cohorts are cumulative). */
  private admitted(record: RolloutRecord, stage: number | null): boolean {
    return stage !== null && record.currentStage !== null && stage <= record.currentStage
  }

  private enterStage(record: RolloutRecord, index: number, now: number): void {
    const stage = record.spec.stages[index]
    record.state = 'running'
    record.currentStage = index
    record.stageStartedAt[index] = now
    record.nextChangeAt = now + (stage?.durationMs ?? 0)
    this.event(record, now, 'stage', index, `${stage?.percent ?? 0} %`)
  }

  private async haltIfFailing(record: RolloutRecord, now: number): Promise<void> {
    if (record.state !== 'running' && record.state !== 'paused') return
    const { perStage, overall } = this.counts()
    const { maxFailureRate, minSample } = record.spec
    const cohorts = [
      ...perStage.map((counts, i) => ({ what: `stage ${i} cohort`, counts })),
      { what: 'all cohorts', counts: overall },
    ]
    for (const { what, counts } of cohorts) {
      const stats = failureStats(counts, maxFailureRate, minSample)
      if (stats.decision !== 'halt') continue
      const pct = (x: number) => `${(x * 100).toFixed(1)} %`
      record.haltedReason = `${what}: ${stats.failures} of ${stats.total} failed; 95 % Wilson interval [${pct(stats.interval.lower)}, ${pct(stats.interval.upper)}] is above the ${pct(maxFailureRate)} limit`
      record.state = 'halted'
      record.nextChangeAt = null
      record.pausedRemainingMs = null
      this.event(record, now, 'halted', record.currentStage ?? undefined, record.haltedReason)
      await this.commit(record)
      log({ level: 'warn', msg: 'rollout halted', name: record.name, reason: record.haltedReason })
      return
    }
  }

  /**
   * Null while the outcomes kept are fewer than MAX_REPORTING_CLIENTS (the tallies count them, a few
   * rows); at the cap, the client whose `installed` report is oldest, or false when none is left.
   */
  private replaceableAtCap(): { client_id: string; stage: number } | null | false {
    const kept = this.sql.exec<{ n: number | null }>('SELECT SUM(n) AS n FROM tallies').one().n
    if ((kept ?? 0) < MAX_REPORTING_CLIENTS) return null
    const oldest = this.sql
      .exec<{ client_id: string; stage: number }>(
        "SELECT client_id, stage FROM outcomes WHERE outcome = 'installed' ORDER BY at LIMIT 1",
      )
      .toArray()[0]
    return oldest ?? false
  }

  private tally(stage: number, outcome: string, delta: number): void {
    this.sql.exec(
      `INSERT INTO tallies (stage, outcome, n) VALUES (?, ?, ?)
       ON CONFLICT (stage, outcome) DO UPDATE SET n = n + excluded.n`,
      stage,
      outcome,
      delta,
    )
  }

  /** Reporting clients by admission stage and latest outcome. */
  private counts(): { perStage: OutcomeCounts[]; overall: OutcomeCounts } {
    const stages = this.record?.spec.stages.length ?? 0
    const perStage = Array.from({ length: stages }, emptyCounts)
    const overall = emptyCounts()
    const rows = this.sql
      .exec<{ stage: number; outcome: string; n: number }>('SELECT stage, outcome, n FROM tallies')
      .toArray()
    for (const row of rows) {
      const kind = row.outcome as RolloutOutcomeKind
      const counts = perStage[row.stage]
      if (counts === undefined || !(kind in overall)) continue
      counts[kind] += row.n
      overall[kind] += row.n
    }
    return { perStage, overall }
  }

  private statusOf(record: RolloutRecord): RolloutStatus {
    const { perStage, overall } = this.counts()
    const { maxFailureRate, minSample, stages } = record.spec
    const errorClasses = this.sql
      .exec<{ error_class: string; n: number }>(
        `SELECT error_class, COUNT(*) AS n FROM outcomes WHERE error_class IS NOT NULL
         GROUP BY error_class ORDER BY n DESC, error_class LIMIT 20`,
      )
      .toArray()
      .map((r) => ({ errorClass: r.error_class, count: r.n }))
    return {
      name: record.name,
      channel: record.channel,
      version: record.spec.version,
      state: record.state,
      createdAt: iso(record.createdAt),
      startAt: iso(record.startAt),
      stages,
      maxFailureRate,
      minSample,
      currentStage: record.currentStage,
      currentPercent: record.currentStage === null ? 0 : (stages[record.currentStage]?.percent ?? 0),
      nextChangeAt: record.nextChangeAt === null ? null : iso(record.nextChangeAt),
      pausedRemainingMs: record.state === 'paused' ? record.pausedRemainingMs : null,
      haltedReason: record.haltedReason,
      progress: stages.map((s, i) => {
        const startedAt = record.stageStartedAt[i] ?? null
        return {
          stage: i,
          percent: s.percent,
          startedAt: startedAt === null ? null : iso(startedAt),
          stats: failureStats(perStage[i] ?? emptyCounts(), maxFailureRate, minSample),
        }
      }),
      overall: failureStats(overall, maxFailureRate, minSample),
      errorClasses,
      history: record.history,
    }
  }

  private event(
    record: RolloutRecord,
    now: number,
    event: RolloutHistoryEvent['event'],
    stage?: number,
    detail?: string,
    signedAt?: string,
  ): void {
    record.history.push({
      at: iso(now),
      event,
      ...(stage === undefined ? {} : { stage }),
      ...(detail === undefined ? {} : { detail: detail.slice(0, 300) }),
      ...(signedAt === undefined ? {} : { signedAt }),
    })
    if (record.history.length > MAX_HISTORY) record.history.splice(0, record.history.length - MAX_HISTORY)
  }

  /**
   * A statement signed no later than the newest one this object acted on has been used (or was
   * overtaken): a copy replayed by whoever holds the token must not pause, resume or abort again.
   */
  private replayedStatement(signedAt: string | undefined): RolloutResult<never> | null {
    if (signedAt === undefined || !this.hasTables) return null
    const last = readMeta(this.sql, LAST_SIGNED_KEY)
    if (last === null || Date.parse(signedAt) > Number(last)) return null
    return conflict(
      `this rollout already acted on a statement signed at ${iso(Number(last))}; a statement signed at ${signedAt} is a replay or overtaken: sign a new one`,
    )
  }

  /**
   * Stores the record (and the signing time of the statement it acted on, if any) and makes the alarm
   * match its pending change. The alarm is set in the same synchronous turn as the row is written, so the
   * runtime commits the two together; should the alarm still not land (the call fails, the object is
   * reset), `alarmInSync` stays false and syncAlarm re-arms it at the next call.
   */
  private async commit(record: RolloutRecord, signedAt?: string): Promise<void> {
    this.alarmInSync = false
    if (signedAt !== undefined) writeMeta(this.sql, LAST_SIGNED_KEY, String(Date.parse(signedAt)))
    writeMeta(this.sql, RECORD_KEY, JSON.stringify(record))
    this.record = record
    const armed =
      record.nextChangeAt === null
        ? this.ctx.storage.deleteAlarm()
        : this.ctx.storage.setAlarm(record.nextChangeAt)
    await armed
    this.alarmInSync = true
  }
}

function notFound(): { ok: false; status: 404; detail: string } {
  return { ok: false, status: 404, detail: 'no rollout for this artifact and channel' }
}

function conflict(detail: string): { ok: false; status: 409; detail: string } {
  return { ok: false, status: 409, detail }
}
