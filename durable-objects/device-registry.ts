import { DurableObject } from 'cloudflare:workers'
import { z } from 'zod'
import {
  DeviceId,
  type DeviceInfo,
  type DeviceList,
  DevicePage,
  EnrollmentCodeId,
  type EnrollmentCodeInfo,
  EnrollmentCodeRecord,
  MAX_DEVICES_PER_CODE,
  MAX_ENROLLMENT_DAYS,
} from '../schemas/devices.ts'
import {
  createDeviceTable,
  insertDevice,
  listDevices,
  liveRevocations,
  MAX_LIVE_REVOCATIONS,
  MAX_RECORDED_DEVICES,
  markRevoked,
  readDevice,
  recordedDevices,
  recordRenewal,
} from './device-table.ts'
import { createMetaTable } from './meta-table.ts'
import { takeToken } from './rate-limit.ts'
import { parseStoredJson } from './stored-json.ts'

/** Enrollments per code per minute: a factory line enrolls in bursts, a leaked code cannot mint ids fast. */
export const ENROLLMENTS_PER_CODE_PER_MINUTE = 60
/** Codes kept (revoked ones included, so their devices stay refused); operators create a handful. */
export const MAX_CODES = 10_000

const DAY_MS = 86_400_000
const Sha256 = z.string().regex(/^[0-9a-f]{64}$/)

const CreateInput = z.object({
  codeHash: Sha256,
  label: z.string().min(1).max(64),
  maxDevices: z.number().int().min(1).max(MAX_DEVICES_PER_CODE),
  expiresDays: z.number().int().min(1).max(MAX_ENROLLMENT_DAYS),
  credentialDays: z.number().int().min(1).max(MAX_ENROLLMENT_DAYS),
})
const EnrollInput = z.object({
  codeHash: Sha256,
  /** A device id the caller verified (its credential's MAC) to renew; it must belong to this code. */
  renew: z.object({ deviceId: DeviceId, codeId: EnrollmentCodeId }).optional(),
})

/** An RPC answer: errors travel as values because custom Error fields do not survive RPC. */
export type RegistryResult<T> =
  | { ok: true; value: T }
  | { ok: false; status: 403 | 404 | 409 | 429; detail: string; retryAfterSeconds?: number }

export type CodeState = 'active' | 'revoked' | 'unknown'

/** What the hot path needs about a code: its state and its devices revoked one by one (still live). */
export interface CredentialState {
  code: CodeState
  revokedDevices: string[]
}

/** What `enroll` hands the Worker to sign: the registry decides the times so its rows match them. */
export interface Enrolled {
  deviceId: string
  codeId: string
  renewed: boolean
  /** Epoch seconds. */
  issuedAt: number
  /** Epoch seconds. */
  expiresAt: number
}

const log = (fields: Record<string, unknown>) =>
  console.log(JSON.stringify({ do: 'DeviceRegistry', ...fields }))

const iso = (ms: number) => new Date(ms).toISOString()

/** The one registry of the edge (`idFromName('global')`): every caller names it the same way. */
export function deviceRegistry(env: Env) {
  return env.DEVICE_REGISTRY.get(env.DEVICE_REGISTRY.idFromName('global'))
}

export function codeInfo(record: EnrollmentCodeRecord): EnrollmentCodeInfo {
  return {
    id: record.id,
    label: record.label,
    maxDevices: record.maxDevices,
    enrolled: record.enrolled,
    credentialDays: record.credentialDays,
    createdAt: iso(record.createdAt),
    expiresAt: iso(record.expiresAt),
    revokedAt: record.revokedAt === null ? null : iso(record.revokedAt),
  }
}

function randomId(prefix: string, bytes: number): string {
  const raw = crypto.getRandomValues(new Uint8Array(bytes))
  return (
    prefix +
    btoa(String.fromCharCode(...raw))
      .replace(/\+/g, '-')
      .replace(/\//g, '_')
      .replace(/=+$/, '')
  )
}

/**
 * Enrollment codes, how many devices each enrolled, and the devices themselves
 * (docs/decisions/0026-device-enrollment.md). Only the SHA-256 of a code is stored. A credential is
 * verified from its MAC in the Worker; the only state the hot path needs is whether its code was
 * revoked and which of its devices were (`credentialState`, cached per isolate per code).
 */
export class DeviceRegistry extends DurableObject<Env> {
  private readonly sql: SqlStorage

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env)
    this.sql = ctx.storage.sql
    ctx.blockConcurrencyWhile(async () => {
      this.sql.exec(`CREATE TABLE IF NOT EXISTS codes (
        id TEXT PRIMARY KEY,
        code_hash TEXT NOT NULL UNIQUE,
        record TEXT NOT NULL
      )`)
      createMetaTable(this.sql)
      createDeviceTable(this.sql)
    })
  }

  /** A new code (the caller generated it and passes its hash); refused beyond MAX_CODES. */
  async createCode(input: z.input<typeof CreateInput>): Promise<RegistryResult<EnrollmentCodeInfo>> {
    const { codeHash, label, maxDevices, expiresDays, credentialDays } = CreateInput.parse(input)
    const count = this.sql.exec<{ n: number }>('SELECT COUNT(*) AS n FROM codes').one().n
    if (count >= MAX_CODES)
      return { ok: false, status: 409, detail: `this edge already holds ${MAX_CODES} enrollment codes` }
    const now = Date.now()
    const record: EnrollmentCodeRecord = {
      id: randomId('c', 9),
      label,
      maxDevices,
      enrolled: 0,
      credentialDays,
      createdAt: now,
      expiresAt: now + expiresDays * DAY_MS,
      revokedAt: null,
    }
    this.sql.exec(
      'INSERT INTO codes (id, code_hash, record) VALUES (?, ?, ?)',
      record.id,
      codeHash,
      JSON.stringify(record),
    )
    log({ level: 'info', msg: 'enrollment code created', id: record.id, label, maxDevices })
    return { ok: true, value: codeInfo(record) }
  }

  async listCodes(): Promise<EnrollmentCodeInfo[]> {
    return this.sql
      .exec<{ record: string }>('SELECT record FROM codes')
      .toArray()
      .flatMap((row) => this.parse(row.record) ?? [])
      .sort((a, b) => b.createdAt - a.createdAt)
      .map(codeInfo)
  }

  /** Revokes a code and with it every credential it issued (the edge refuses them within its cache TTL). */
  async revokeCode(id: string): Promise<RegistryResult<EnrollmentCodeInfo>> {
    const found = this.byId(EnrollmentCodeId.parse(id))
    if (found === null) return { ok: false, status: 404, detail: `no enrollment code ${id}` }
    if (found.revokedAt !== null) return { ok: true, value: codeInfo(found) }
    const revoked: EnrollmentCodeRecord = { ...found, revokedAt: Date.now() }
    this.write(revoked)
    log({ level: 'info', msg: 'enrollment code revoked', id, enrolled: revoked.enrolled })
    return { ok: true, value: codeInfo(revoked) }
  }

  /**
   * The hot path's question, asked once per code per isolate cache period: the code's state and the
   * ids of its revoked devices that may still hold a valid credential (bounded by MAX_LIVE_REVOCATIONS).
   */
  async credentialState(id: string): Promise<CredentialState> {
    const parsed = EnrollmentCodeId.safeParse(id)
    if (!parsed.success) return { code: 'unknown', revokedDevices: [] }
    const found = this.byId(parsed.data)
    if (found === null) return { code: 'unknown', revokedDevices: [] }
    if (found.revokedAt !== null) return { code: 'revoked', revokedDevices: [] }
    return { code: 'active', revokedDevices: liveRevocations(this.sql, Date.now(), found.id) }
  }

  /** One page of recorded devices, optionally of one code. */
  async listDevices(query: DevicePage): Promise<DeviceList> {
    return listDevices(this.sql, DevicePage.parse(query))
  }

  /**
   * Revokes one device: the edge refuses its credentials within the cache TTL and will not renew it.
   * Idempotent. Refused (409) beyond MAX_LIVE_REVOCATIONS, because every isolate caches those ids.
   */
  async revokeDevice(id: string): Promise<RegistryResult<DeviceInfo>> {
    const deviceId = DeviceId.parse(id)
    const found = readDevice(this.sql, deviceId)
    if (found === null) return { ok: false, status: 404, detail: `no recorded device ${deviceId}` }
    if (found.revokedAt !== null) return { ok: true, value: found }
    const now = Date.now()
    if (liveRevocations(this.sql, now).length >= MAX_LIVE_REVOCATIONS)
      return {
        ok: false,
        status: 409,
        detail: `${MAX_LIVE_REVOCATIONS} revoked devices still hold valid credentials: revoke their enrollment code instead`,
      }
    markRevoked(this.sql, deviceId, now)
    log({ level: 'info', msg: 'device revoked', deviceId, codeId: found.codeId })
    return { ok: true, value: { ...found, revokedAt: iso(now) } }
  }

  /**
   * One enrollment with the code whose hash is given: a new device id (counted against maxDevices,
   * only while the code is unexpired), or the renewal of one the code enrolled before (not counted,
   * also after the enrollment window, never once the code or the device was revoked). Rate-limited per
   * code either way. Every device it answers is recorded, with its newest credential's expiry.
   */
  async enroll(input: z.input<typeof EnrollInput>): Promise<RegistryResult<Enrolled>> {
    const { codeHash, renew } = EnrollInput.parse(input)
    const row = this.sql
      .exec<{ record: string }>('SELECT record FROM codes WHERE code_hash = ?', codeHash)
      .toArray()[0]
    const record = row === undefined ? null : this.parse(row.record)
    if (record === null) return { ok: false, status: 403, detail: 'unknown enrollment code' }
    if (record.revokedAt !== null)
      return { ok: false, status: 403, detail: `enrollment code ${record.id} was revoked` }
    const now = Date.now()
    const taken = takeToken(record.bucket, ENROLLMENTS_PER_CODE_PER_MINUTE, now)
    if (!taken.ok) {
      this.write({ ...record, bucket: taken.bucket })
      return {
        ok: false,
        status: 429,
        detail: `too many enrollments with code ${record.id}`,
        retryAfterSeconds: taken.retryAfterSeconds,
      }
    }
    const issuedAt = Math.floor(now / 1000)
    const expiresAt = issuedAt + record.credentialDays * 86_400
    if (renew !== undefined && renew.codeId === record.id) {
      this.write({ ...record, bucket: taken.bucket })
      const device = readDevice(this.sql, renew.deviceId)
      // A revoked device is not renewed, and the request does not turn into a fresh enrollment either:
      // that would hand the revoked device a new id and slot at once (ADR 0026, "Later changes").
      if (device !== null && device.revokedAt !== null)
        return { ok: false, status: 403, detail: `device ${renew.deviceId} was revoked` }
      if (device !== null) recordRenewal(this.sql, renew.deviceId, now, expiresAt * 1000)
      else if (recordedDevices(this.sql) < MAX_RECORDED_DEVICES)
        // Enrolled before devices were recorded: recorded now, its enrollment time unknown.
        insertDevice(this.sql, {
          id: renew.deviceId,
          codeId: record.id,
          enrolledAt: null,
          renewedAt: now,
          expiresAt: expiresAt * 1000,
        })
      else log({ level: 'warn', msg: 'device renewed unrecorded: registry full', deviceId: renew.deviceId })
      return {
        ok: true,
        value: { deviceId: renew.deviceId, codeId: record.id, renewed: true, issuedAt, expiresAt },
      }
    }
    if (now >= record.expiresAt) {
      this.write({ ...record, bucket: taken.bucket })
      return {
        ok: false,
        status: 403,
        detail: `enrollment code ${record.id} expired on ${iso(record.expiresAt)}`,
      }
    }
    if (record.enrolled >= record.maxDevices) {
      this.write({ ...record, bucket: taken.bucket })
      return {
        ok: false,
        status: 409,
        detail: `enrollment code ${record.id} has enrolled its ${record.maxDevices} devices`,
      }
    }
    if (recordedDevices(this.sql) >= MAX_RECORDED_DEVICES) {
      this.write({ ...record, bucket: taken.bucket })
      return {
        ok: false,
        status: 409,
        detail: `this edge already records ${MAX_RECORDED_DEVICES} devices`,
      }
    }
    const deviceId = randomId('d', 15)
    this.write({ ...record, enrolled: record.enrolled + 1, bucket: taken.bucket })
    insertDevice(this.sql, {
      id: deviceId,
      codeId: record.id,
      enrolledAt: now,
      renewedAt: null,
      expiresAt: expiresAt * 1000,
    })
    return { ok: true, value: { deviceId, codeId: record.id, renewed: false, issuedAt, expiresAt } }
  }

  private byId(id: string): EnrollmentCodeRecord | null {
    const row = this.sql.exec<{ record: string }>('SELECT record FROM codes WHERE id = ?', id).toArray()[0]
    return row === undefined ? null : this.parse(row.record)
  }

  private write(record: EnrollmentCodeRecord): void {
    this.sql.exec('UPDATE codes SET record = ? WHERE id = ?', JSON.stringify(record), record.id)
  }

  private parse(text: string): EnrollmentCodeRecord | null {
    const record = parseStoredJson(text, EnrollmentCodeRecord)
    if (record !== null) return record
    log({ level: 'error', msg: 'unreadable enrollment code record' })
    return null
  }
}
