import { DEVICE_CREDENTIAL_PATTERN, type StoredDeviceCredential } from '../../schemas/devices.ts'
import type { AgentConfig } from '../config.ts'
import { AgentError, fromFileSystemError } from '../errors.ts'
import { codeSha256, DeviceCredentialStore } from './credential-store.ts'
import { enrollDevice } from './enroll.ts'

/** After a failed (unreachable edge) enrollment, how long this process waits before trying again. */
export const ENROLL_RETRY_MS = 10 * 60_000
/** Statuses by which the edge says the code itself cannot enroll this device: remembered on disk. */
const CODE_REFUSED = new Set([403, 409])
/**
 * The agent renews its credential once it is in the last this-much of its lifetime (issuedAt →
 * expiresAt, the edge's own times in the credential), so a device that reports rarely or goes offline
 * for a while does not come back with an expired one and lose its first report to a 401.
 */
export const RENEW_FRACTION = 0.2
/**
 * At most one proactive renewal per this period per process, whatever its outcome: an unreachable edge,
 * or one whose clock makes even a fresh credential look due, costs one request per period, never a loop.
 */
export const RENEW_RETRY_MS = 10 * 60_000

let clock: () => number = Date.now

/** Tests: the session's clock (null restores Date.now). The edge keeps its own. */
export function setDeviceSessionClock(now: (() => number) | null): void {
  clock = now ?? Date.now
}

/** When the agent starts renewing `stored` (epoch ms): RENEW_FRACTION of its lifetime before expiry. */
export function renewalTime(stored: StoredDeviceCredential): number {
  const [, , , issued, expires] = DEVICE_CREDENTIAL_PATTERN.exec(stored.credential) ?? []
  const issuedAt = Number(issued) * 1000
  const expiresAt = Number(expires) * 1000
  // The stored credential passed the same pattern; a garbled one is due at once (the edge decides).
  if (!Number.isFinite(issuedAt) || !Number.isFinite(expiresAt)) return 0
  return expiresAt - Math.max(0, expiresAt - issuedAt) * RENEW_FRACTION
}

type SessionConfig = Pick<AgentConfig, 'edgeUrl' | 'installRoot'> & { enrollmentCode: string }

/**
 * How a caller waits for an enrollment it starts: `stallMs`, the longest the edge may say nothing (30 s
 * by default); a rollback's 5 s (ROLLBACK_EDGE_STALL_MS) is a caller that cannot wait the usual time.
 */
export interface EnrollWait {
  stallMs?: number
}

/**
 * The device's credential for one config, shared by every request of this process: read from disk,
 * enrolled on first need, renewed ahead of expiry (RENEW_FRACTION, at most once per RENEW_RETRY_MS),
 * re-enrolled when the edge refuses it (at most once per RENEW_RETRY_MS). Never throws: a device that cannot enroll keeps
 * working anonymously (its reports stay queued if the edge requires one).
 */
export class DeviceSession {
  private readonly config: SessionConfig
  private readonly fetchImpl: typeof fetch
  private readonly store: DeviceCredentialStore
  private readonly code: string
  private readonly codeHash: string
  private cached: StoredDeviceCredential | null = null
  private retryAt = 0
  /** No proactive renewal before this (epoch ms by `clock`). */
  private renewNotBefore = 0
  /**
   * No re-enrollment before this (epoch ms by `clock`): a credential the edge keeps refusing costs one
   * enrollment per RENEW_RETRY_MS, never a loop, yet a long-running daemon whose credential is refused a
   * second time (another secret rotation, weeks later) recovers without a restart.
   */
  private reenrollNotBefore = Number.NEGATIVE_INFINITY
  /**
   * The credential the edge refused with a 401 in this process and that could not be renewed yet (the
   * renewal did not get through): kept on disk, since only it proves the device id to the edge, but not
   * sent again; renewed with it once `retryAt` has passed.
   */
  private refusedCredential: string | null = null
  /** The edge asked for a renewal now (CREDENTIAL_RENEW_HEADER), whatever the credential's age. */
  private renewalRequested = false
  private pending: Promise<StoredDeviceCredential | null> | null = null
  /** Why the last enrollment failed, for logs and `deltaport devices status`. */
  lastError: string | null = null
  /**
   * The typed failure behind `lastError` (network, an edge refusal, the credential file), so
   * `deltaport devices enroll` exits with its code rather than call every failure a refusal.
   */
  lastFailure: AgentError | null = null

  constructor(config: SessionConfig, fetchImpl: typeof fetch = fetch) {
    this.config = config
    this.fetchImpl = fetchImpl
    this.store = new DeviceCredentialStore(config.installRoot)
    this.code = config.enrollmentCode
    this.codeHash = codeSha256(config.enrollmentCode)
  }

  /**
   * The credential to send, enrolling first if there is none and renewing it first when it is due (one
   * enrollment at a time; concurrent callers share it).
   */
  current(wait: EnrollWait = {}): Promise<StoredDeviceCredential | null> {
    const cached = this.cached
    if (cached !== null && !this.renewalDue(cached)) return Promise.resolve(cached)
    this.pending ??= (cached === null ? this.load(wait) : this.renew(cached, wait)).finally(() => {
      this.pending = null
    })
    return this.pending
  }

  private renewalDue(stored: StoredDeviceCredential): boolean {
    const now = clock()
    return now >= this.renewNotBefore && (this.renewalRequested || now >= renewalTime(stored))
  }

  /**
   * The edge accepted the credential but asked for a new one (its key is being rotated out of the
   * edge's secret): the next request renews first, still at most once per RENEW_RETRY_MS.
   */
  requestRenewal(): void {
    this.renewalRequested = true
  }

  /**
   * Proactive renewal: the same device id, a fresh credential. Until it works the current credential is
   * still sent (it is valid, or the edge's 401 leads to `reenroll`); a refusal is remembered on disk
   * like any other, so a revoked device does not ask again.
   */
  private async renew(stored: StoredDeviceCredential, wait: EnrollWait): Promise<StoredDeviceCredential> {
    this.renewNotBefore = clock() + RENEW_RETRY_MS
    return (await this.enroll(stored.credential, false, wait)) ?? stored
  }

  /**
   * The edge refused `previous` (invalid, expired, revoked) or wanted a credential this device lacks:
   * enroll again (at most once per RENEW_RETRY_MS), renewing the same device id when the edge still
   * recognises it. Null when the code cannot enroll (revoked, expired, full), the edge is unreachable,
   * or the last re-enrollment was too recent.
   */
  async reenroll(
    previous: StoredDeviceCredential | null,
    wait: EnrollWait = {},
  ): Promise<StoredDeviceCredential | null> {
    const now = clock()
    // A clock stepped back more than a period must not hold re-enrollment off for that long.
    if (now < this.reenrollNotBefore && now >= this.reenrollNotBefore - RENEW_RETRY_MS) return null
    this.reenrollNotBefore = now + RENEW_RETRY_MS
    this.cached = null
    this.retryAt = 0
    // A refusal remembered on disk (the code was revoked, expired or full) is not asked again.
    const renewed = await this.enroll(previous?.credential, false, wait)
    if (renewed !== null || previous === null) return renewed
    // Refused for good (revoked device or code): the credential is dead, the device reports without it.
    // Otherwise (edge unreachable, rate-limited) it is the device's only proof of its id: dropping it
    // would make the next enrollment a new device on a new slot of its code.
    const refusal = await this.store.refusal()
    if (refusal !== null && refusal.codeSha256 === this.codeHash) await this.store.forget()
    else this.refusedCredential = previous.credential
    return null
  }

  private async load(wait: EnrollWait): Promise<StoredDeviceCredential | null> {
    const stored = await this.store.read()
    // A credential from another code (the config changed) is not what the operator asked for now.
    if (stored !== null && stored.codeSha256 === this.codeHash) {
      if (stored.credential === this.refusedCredential)
        return clock() < this.retryAt ? null : this.enroll(stored.credential, false, wait)
      this.cached = stored
      return this.renewalDue(stored) ? this.renew(stored, wait) : stored
    }
    if (clock() < this.retryAt) return null
    const refusal = await this.store.refusal()
    if (refusal !== null && refusal.codeSha256 === this.codeHash) {
      this.lastError = `enrollment refused on ${refusal.at}: ${refusal.detail}`
      return null
    }
    return this.enroll(undefined, false, wait)
  }

  /**
   * Whether the edge refused this config's code for good (remembered on disk): the device then stays
   * anonymous under its telemetry id, rather than waiting for an enrollment that will not come.
   */
  async refusedForGood(): Promise<boolean> {
    return (await this.store.refusal())?.codeSha256 === this.codeHash
  }

  /** Enrolls now; `force` ignores a refusal remembered from an earlier run (the edge decides again). */
  async enroll(
    previous: string | undefined,
    force: boolean,
    wait: EnrollWait = {},
  ): Promise<StoredDeviceCredential | null> {
    if (!force) {
      const refusal = await this.store.refusal()
      if (refusal !== null && refusal.codeSha256 === this.codeHash) return null
    }
    try {
      const credential = await enrollDevice(this.config.edgeUrl, this.code, {
        ...(previous === undefined ? {} : { previous }),
        fetchImpl: this.fetchImpl,
        ...(wait.stallMs === undefined ? {} : { stallMs: wait.stallMs }),
      })
      await this.store.write(credential)
      this.cached = credential
      this.renewalRequested = false
      this.lastError = null
      this.lastFailure = null
      return credential
    } catch (error) {
      this.lastError = error instanceof Error ? error.message : String(error)
      this.lastFailure = error instanceof AgentError ? error : fromFileSystemError(error)
      const status = error instanceof AgentError ? error.details.status : undefined
      if (typeof status === 'number' && CODE_REFUSED.has(status)) {
        await this.store
          .recordRefusal({
            codeSha256: this.codeHash,
            status,
            detail: this.lastError.slice(0, 600),
            at: new Date().toISOString(),
          })
          .catch(() => undefined)
      } else {
        this.retryAt = clock() + ENROLL_RETRY_MS
      }
      return null
    }
  }
}

const sessions = new Map<string, DeviceSession>()

/** The process-wide session of a config (null without an enrollment code). */
export function deviceSession(config: AgentConfig, fetchImpl?: typeof fetch): DeviceSession | null {
  const code = config.enrollmentCode
  if (code === undefined) return null
  const key = `${config.edgeUrl}\0${config.installRoot}\0${code}`
  let session = sessions.get(key)
  if (session === undefined) {
    session = new DeviceSession(
      { edgeUrl: config.edgeUrl, installRoot: config.installRoot, enrollmentCode: code },
      fetchImpl,
    )
    sessions.set(key, session)
  }
  return session
}

/** Tests: forget every process-wide session (a new "process"). */
export function forgetDeviceSessions(): void {
  sessions.clear()
}
