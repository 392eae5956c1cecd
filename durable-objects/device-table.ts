/**
 * The DeviceRegistry's record of enrolled devices (ADR 0026, "Later changes"): one row per device id
 * with its code, enrollment, last renewal, newest credential's expiry and revocation. Nothing on the
 * hot path reads a row: the Worker asks once per code per cache period for the code's *live*
 * revocations (revoked devices whose newest credential has not expired yet), which is what keeps the
 * per-isolate cache small however many devices are recorded.
 */
import type { DeviceInfo, DeviceList } from '../schemas/devices.ts'
import { readMeta, writeMeta } from './meta-table.ts'

/** Devices recorded at most (a hard cap beside the codes' maxDevices): about 150 MB of SQLite. */
export const MAX_RECORDED_DEVICES = 1_000_000
/**
 * Revoked devices whose credentials may still be valid, edge-wide. Every isolate caches them, so they
 * must stay small; beyond this, revoking the code (or waiting for credentials to expire) is the tool.
 */
export const MAX_LIVE_REVOCATIONS = 10_000
/**
 * A revocation stays live this long past the newest credential's expiry: the Worker checks expiry with
 * its own clock, and this covers any skew between it and the registry's.
 */
const EXPIRY_GRACE_MS = 3_600_000
const COUNT_KEY = 'recorded-devices'

interface DeviceRow extends Record<string, SqlStorageValue> {
  id: string
  code_id: string
  enrolled_at: number | null
  renewed_at: number | null
  credential_expires_at: number
  revoked_at: number | null
}

export function createDeviceTable(sql: SqlStorage): void {
  sql.exec(`CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    code_id TEXT NOT NULL,
    enrolled_at INTEGER,
    renewed_at INTEGER,
    credential_expires_at INTEGER NOT NULL,
    revoked_at INTEGER
  ) WITHOUT ROWID`)
  // Listing one code's devices in id order (paged by id).
  sql.exec('CREATE INDEX IF NOT EXISTS devices_by_code ON devices (code_id, id)')
  // Only revoked rows: the hot path's question and the live-revocation cap read these and nothing else.
  sql.exec(`CREATE INDEX IF NOT EXISTS devices_revoked ON devices (code_id, credential_expires_at)
    WHERE revoked_at IS NOT NULL`)
  // A counter instead of COUNT(*) per enrollment, which would read (and bill) every row.
  if (readMeta(sql, COUNT_KEY) === null)
    writeMeta(sql, COUNT_KEY, String(sql.exec<{ n: number }>('SELECT COUNT(*) AS n FROM devices').one().n))
}

export function recordedDevices(sql: SqlStorage): number {
  return Number(readMeta(sql, COUNT_KEY) ?? '0')
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

function info(row: DeviceRow): DeviceInfo {
  return {
    deviceId: row.id,
    codeId: row.code_id,
    enrolledAt: iso(row.enrolled_at),
    renewedAt: iso(row.renewed_at),
    credentialExpiresAt: new Date(row.credential_expires_at).toISOString(),
    revokedAt: iso(row.revoked_at),
  }
}

export function readDevice(sql: SqlStorage, id: string): DeviceInfo | null {
  const row = sql.exec<DeviceRow>('SELECT * FROM devices WHERE id = ?', id).toArray()[0]
  return row === undefined ? null : info(row)
}

/**
 * Records a device: `enrolledAt` null for one enrolled before devices were recorded (first seen when it
 * renews). The caller checks MAX_RECORDED_DEVICES first.
 */
export function insertDevice(
  sql: SqlStorage,
  device: {
    id: string
    codeId: string
    enrolledAt: number | null
    renewedAt: number | null
    expiresAt: number
  },
): void {
  sql.exec(
    `INSERT INTO devices (id, code_id, enrolled_at, renewed_at, credential_expires_at, revoked_at)
     VALUES (?, ?, ?, ?, ?, NULL)`,
    device.id,
    device.codeId,
    device.enrolledAt,
    device.renewedAt,
    device.expiresAt,
  )
  writeMeta(sql, COUNT_KEY, String(recordedDevices(sql) + 1))
}

export function recordRenewal(sql: SqlStorage, id: string, now: number, expiresAt: number): void {
  sql.exec(
    'UPDATE devices SET renewed_at = ?, credential_expires_at = MAX(credential_expires_at, ?) WHERE id = ?',
    now,
    expiresAt,
    id,
  )
}

export function markRevoked(sql: SqlStorage, id: string, now: number): void {
  sql.exec('UPDATE devices SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL', now, id)
}

/** Revoked devices whose credentials may still be valid: edge-wide, or of one code (the hot path's set). */
export function liveRevocations(sql: SqlStorage, now: number, codeId?: string): string[] {
  const since = now - EXPIRY_GRACE_MS
  const rows =
    codeId === undefined
      ? sql.exec<{ id: string }>(
          'SELECT id FROM devices WHERE revoked_at IS NOT NULL AND credential_expires_at > ? LIMIT ?',
          since,
          MAX_LIVE_REVOCATIONS + 1,
        )
      : sql.exec<{ id: string }>(
          `SELECT id FROM devices WHERE revoked_at IS NOT NULL AND code_id = ? AND credential_expires_at > ?
           LIMIT ?`,
          codeId,
          since,
          MAX_LIVE_REVOCATIONS + 1,
        )
  return rows.toArray().map((row) => row.id)
}

/** One page in device id order (the primary key, or the per-code index), `limit` rows at most. */
export function listDevices(
  sql: SqlStorage,
  query: { code?: string | undefined; after?: string | undefined; limit: number },
): DeviceList {
  const after = query.after ?? ''
  const rows =
    query.code === undefined
      ? sql.exec<DeviceRow>('SELECT * FROM devices WHERE id > ? ORDER BY id LIMIT ?', after, query.limit + 1)
      : sql.exec<DeviceRow>(
          'SELECT * FROM devices WHERE code_id = ? AND id > ? ORDER BY id LIMIT ?',
          query.code,
          after,
          query.limit + 1,
        )
  const page = rows.toArray()
  const more = page.length > query.limit
  const devices = page.slice(0, query.limit).map(info)
  return { devices, next: more ? (devices.at(-1)?.deviceId ?? null) : null }
}
