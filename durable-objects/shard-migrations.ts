/**
 * Replica migrations of the ShardPlanner (ADR 0011, "Migrations"): one row per replica to add to or
 * remove from a zone bucket, queued by a new plan version and advanced a few steps per alarm with
 * retries; plus the audit that notices an active replica gone missing and queues it again. The bucket
 * I/O (copy, verify, delete, never on the primary) is in shard-replicas.ts.
 */
import type { PlanDiff } from '../predict/index.ts'
import { hourOf } from '../predict/index.ts'
import type { Migration, ShardMetrics, ShardPlan, ZonesConfig } from '../schemas/shards.ts'
import { readMeta, writeMeta } from './meta-table.ts'
import { addZoneMetrics } from './shard-demand.ts'
import { readCurrentPlan, savePlan } from './shard-plans.ts'
import { copyReplica, deleteReplica, toHex, verifyReplica, zoneBucket } from './shard-replicas.ts'

/** Migration steps per alarm; more pending work re-arms the alarm in a second. */
const MAX_MIGRATIONS_PER_CYCLE = 16
const MAX_ATTEMPTS = 3
/**
 * Active replicas re-checked per cycle (one R2 head each); a cursor rotates through the plan so every
 * replica is checked within a few cycles however large the plan is.
 */
const MAX_AUDITS_PER_CYCLE = 32

const log = (fields: Record<string, unknown>) =>
  console.log(JSON.stringify({ do: 'ShardPlanner', ...fields }))

type MigrationRow = {
  id: number
  plan_version: number
  kind: 'add' | 'remove'
  entry: string
  key: string
  zone: string
  bytes: number
  sha256: string
  state: Migration['state']
  attempts: number
  not_before: number
  error: string | null
}

export function createMigrationTable(sql: SqlStorage): void {
  sql.exec(`
      CREATE TABLE IF NOT EXISTS migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, plan_version INTEGER NOT NULL,
        kind TEXT NOT NULL, entry TEXT NOT NULL, key TEXT NOT NULL, zone TEXT NOT NULL, bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL, not_before INTEGER NOT NULL,
        error TEXT);
    `)
}

/** All migrations, newest first (operators, tests). */
export function listMigrations(sql: SqlStorage, limit: number): Migration[] {
  return sql
    .exec<MigrationRow>('SELECT * FROM migrations ORDER BY id DESC LIMIT ?', limit)
    .toArray()
    .map((r) => ({
      id: r.id,
      planVersion: r.plan_version,
      kind: r.kind,
      entry: r.entry,
      key: r.key,
      zone: r.zone,
      bytes: r.bytes,
      sha256: r.sha256,
      state: r.state,
      attempts: r.attempts,
      notBefore: r.not_before,
      ...(r.error === null ? {} : { error: r.error }),
    }))
}

export function countMigrations(sql: SqlStorage, states: readonly Migration['state'][]): number {
  return sql
    .exec<{ n: number }>(
      `SELECT COUNT(*) AS n FROM migrations WHERE state IN (${states.map(() => '?').join(',')})`,
      ...states,
    )
    .one().n
}

/** Pending, active and failed replicas, for the metrics report. */
export function migrationCounts(sql: SqlStorage, plan: ShardPlan | null): ShardMetrics['migrations'] {
  return {
    pending: countMigrations(sql, ['pending', 'copied', 'verified', 'unflipped']),
    // From the plan, not the rows: an add row stays `active` after its replica was removed again.
    active: (plan?.entries ?? []).reduce((n, e) => n + e.active.length, 0),
    failed: countMigrations(sql, ['failed']),
  }
}

/** Queues the migrations from the plan before `planVersion` to it; call in the transaction saving it. */
export function queueMigrations(
  sql: SqlStorage,
  planVersion: number,
  diff: PlanDiff,
  config: ZonesConfig,
  now: number,
): void {
  for (const r of diff.remove) {
    // A copy that never finished is simply dropped; a live replica is unflipped by this very plan
    // (it is not in `active` any more) and deleted once every isolate's cached plan has expired.
    sql.exec(
      `UPDATE migrations SET state = 'cancelled' WHERE kind = 'add' AND entry = ? AND zone = ?
         AND state IN ('pending','copied','verified')`,
      r.entry,
      r.zone,
    )
    insertMigration(sql, planVersion, 'remove', r, 'unflipped', now + 2 * config.planCacheMs)
  }
  for (const a of diff.add) insertMigration(sql, planVersion, 'add', a, 'pending', now)
}

/**
 * Advances migrations: add = copy → verify sha256 → flip (the replica joins `active` in a new plan
 * version); remove = (already unflipped) → delete once `notBefore` passed. Returns steps completed.
 */
export async function runMigrations(
  sql: SqlStorage,
  env: Env,
  config: ZonesConfig,
  now: number,
): Promise<number> {
  // Failed rows out of attempts are left out here, not skipped below: they stay until the history
  // window prunes them (weeks), and skipped ones would fill the per-cycle limit, so every migration
  // queued after enough of them would never run (while the alarm re-armed every second for them).
  const rows = sql
    .exec<MigrationRow>(
      `SELECT * FROM migrations WHERE (state IN ('pending','copied','verified','unflipped')
           OR (state = 'failed' AND attempts < ?))
         AND not_before <= ? ORDER BY id LIMIT ?`,
      MAX_ATTEMPTS,
      now,
      MAX_MIGRATIONS_PER_CYCLE,
    )
    .toArray()
  // zoneBucket never yields the primary (whatever the config names), and deleteReplica/copyReplica
  // refuse it again: migrations only ever write to and delete from replica buckets.
  const zoneBuckets = new Map(config.zones.map((z) => [z.id, zoneBucket(env, z.bucket)]))
  let completed = 0
  for (const m of rows) {
    const bucket = zoneBuckets.get(m.zone) ?? null
    if (m.kind === 'remove') {
      const readded = sql
        .exec<{ n: number }>(
          `SELECT COUNT(*) AS n FROM migrations WHERE kind = 'add' AND key = ? AND zone = ? AND id > ?
             AND state NOT IN ('cancelled','failed')`,
          m.key,
          m.zone,
          m.id,
        )
        .one().n
      try {
        if (readded === 0 && bucket !== null) await deleteReplica(env.ARTIFACTS, bucket, m.key)
      } catch (error) {
        setMigration(sql, m.id, 'failed', String(error).slice(0, 500), m.attempts + 1)
        continue
      }
      setMigration(sql, m.id, 'deleted')
      completed++
      continue
    }
    if (bucket === null) {
      setMigration(sql, m.id, 'failed', `zone ${m.zone} has no replica bucket`, MAX_ATTEMPTS)
      continue
    }
    try {
      if (m.state === 'pending' || m.state === 'failed') {
        await copyReplica(env.ARTIFACTS, bucket, m.key, m.sha256)
        addZoneMetrics(sql, hourOf(now), m.zone, { bytes_moved: m.bytes })
        setMigration(sql, m.id, 'copied')
      }
      if (!(await verifyReplica(bucket, m.key, m.bytes, m.sha256))) {
        await deleteReplica(env.ARTIFACTS, bucket, m.key)
        setMigration(sql, m.id, 'failed', 'replica sha256 mismatch', m.attempts + 1)
        continue
      }
      setMigration(sql, m.id, 'verified')
      if (flip(sql, m.entry, m.zone, m.sha256, now)) setMigration(sql, m.id, 'active')
      else setMigration(sql, m.id, 'cancelled', 'no longer planned')
      completed++
    } catch (error) {
      setMigration(sql, m.id, 'failed', String(error).slice(0, 500), m.attempts + 1)
    }
  }
  return completed
}

/**
 * Re-checks active replicas against their zone bucket (R2 head: present, right size, right sha256 when
 * R2 kept one). The edge silently falls back to the primary for a replica that went missing, so without
 * this a lost or truncated object would stay "active" for good: it is unflipped in a new plan version
 * and a fresh add migration copies, verifies and flips it again. A failing head proves nothing and is
 * retried next cycle. Returns how many replicas were found lost.
 */
export async function auditReplicas(
  storage: DurableObjectStorage,
  env: Env,
  config: ZonesConfig,
  now: number,
): Promise<number> {
  const sql = storage.sql
  const plan = readCurrentPlan(sql)
  if (plan === null) return 0
  const all = plan.entries.flatMap((entry) => entry.active.map((zone) => ({ entry, zone })))
  if (all.length === 0) return 0
  const stored = Number(readMeta(sql, 'auditCursor') ?? 0)
  const start = Number.isSafeInteger(stored) && stored >= 0 ? stored % all.length : 0
  const picked = [...all.slice(start), ...all.slice(0, start)].slice(0, MAX_AUDITS_PER_CYCLE)
  writeMeta(sql, 'auditCursor', String((start + picked.length) % all.length))
  const buckets = new Map(config.zones.map((z) => [z.id, zoneBucket(env, z.bucket)]))
  const lost: { entry: ShardPlan['entries'][number]; zone: string; why: string }[] = []
  for (const { entry, zone } of picked) {
    const bucket = buckets.get(zone) ?? null
    // No bucket bound for the zone any more: the edge serves it from the primary already.
    if (bucket === null) continue
    let head: R2Object | null
    try {
      head = await bucket.head(entry.key)
    } catch {
      continue
    }
    const why =
      head === null
        ? 'replica missing from the zone bucket'
        : head.size !== entry.size
          ? `replica has ${head.size} bytes, expected ${entry.size}`
          : head.checksums.sha256 !== undefined && toHex(head.checksums.sha256) !== entry.sha256
            ? 'replica sha256 differs'
            : null
    if (why !== null) lost.push({ entry, zone, why })
  }
  if (lost.length === 0) return 0
  const lostIn = (id: string, zone: string) => lost.some((l) => l.entry.id === id && l.zone === zone)
  storage.transactionSync(() => {
    const next: ShardPlan = {
      ...plan,
      version: plan.version + 1,
      createdAt: new Date(now).toISOString(),
      entries: plan.entries.map((e) => ({ ...e, active: e.active.filter((z) => !lostIn(e.id, z)) })),
    }
    savePlan(sql, next, now)
    for (const { entry, zone, why } of lost) {
      sql.exec(
        `UPDATE migrations SET state = 'cancelled', error = ? WHERE kind = 'add' AND entry = ? AND zone = ?
           AND state = 'active'`,
        `${why}; re-copied`,
        entry.id,
        zone,
      )
      insertMigration(
        sql,
        next.version,
        'add',
        { entry: entry.id, key: entry.key, zone, bytes: entry.size, sha256: entry.sha256 },
        'pending',
        now,
      )
    }
  })
  log({
    level: 'warn',
    msg: 'replicas lost; unflipped and re-copying',
    lost: lost.map((l) => `${l.entry.id}/${l.zone}: ${l.why}`),
  })
  return lost.length
}

/** Marks a verified replica active in a new plan version, if the plan still wants it there. */
function flip(sql: SqlStorage, entry: string, zone: string, sha256: string, now: number): boolean {
  const plan = readCurrentPlan(sql)
  const target = plan?.entries.find((e) => e.id === entry)
  if (plan === null || target === undefined || target.sha256 !== sha256 || !target.replicas.includes(zone))
    return false
  if (target.active.includes(zone)) return true
  const next: ShardPlan = {
    ...plan,
    version: plan.version + 1,
    createdAt: new Date(now).toISOString(),
    entries: plan.entries.map((e) =>
      e.id === entry ? { ...e, active: e.replicas.filter((z) => z === zone || e.active.includes(z)) } : e,
    ),
  }
  savePlan(sql, next, now)
  return true
}

function insertMigration(
  sql: SqlStorage,
  planVersion: number,
  kind: 'add' | 'remove',
  c: { entry: string; key: string; zone: string; bytes: number; sha256: string },
  state: Migration['state'],
  notBefore: number,
): void {
  sql.exec(
    `INSERT INTO migrations (plan_version, kind, entry, key, zone, bytes, sha256, state, attempts, not_before)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)`,
    planVersion,
    kind,
    c.entry,
    c.key,
    c.zone,
    c.bytes,
    c.sha256,
    state,
    notBefore,
  )
}

function setMigration(
  sql: SqlStorage,
  id: number,
  state: Migration['state'],
  error?: string,
  attempts?: number,
): void {
  sql.exec(
    'UPDATE migrations SET state = ?, error = ?, attempts = COALESCE(?, attempts) WHERE id = ?',
    state,
    error ?? null,
    attempts ?? null,
    id,
  )
}

/**
 * Finished migrations (deleted, cancelled, failed for good, or added then removed again) that were due
 * before `before` (the end of the history window).
 */
export function pruneFinishedMigrations(sql: SqlStorage, before: number): void {
  sql.exec(
    `DELETE FROM migrations AS m WHERE m.not_before < ? AND (m.state IN ('deleted','cancelled')
       OR (m.state = 'failed' AND m.attempts >= ?)
       OR (m.state = 'active' AND EXISTS (SELECT 1 FROM migrations r WHERE r.kind = 'remove'
         AND r.entry = m.entry AND r.zone = m.zone AND r.id > m.id)))`,
    before,
    MAX_ATTEMPTS,
  )
}
