import type { StoredDeviceCredential } from '../../schemas/devices.ts'
import type { AgentConfig } from '../config.ts'
import { AgentError } from '../errors.ts'
import { codeSha256, DeviceCredentialStore } from './credential-store.ts'
import { enrollDevice } from './enroll.ts'

/** After a failed (unreachable edge) enrollment, how long this process waits before trying again. */
export const ENROLL_RETRY_MS = 10 * 60_000
/** Statuses by which the edge says the code itself cannot enroll this device: remembered on disk. */
const CODE_REFUSED = new Set([403, 409])

type SessionConfig = Pick<AgentConfig, 'edgeUrl' | 'installRoot'> & { enrollmentCode: string }

/**
 * The device's credential for one config, shared by every request of this process: read from disk,
 * enrolled on first need, re-enrolled at most once when the edge refuses it. Never throws: a device
 * that cannot enroll keeps working anonymously (its reports stay queued if the edge requires one).
 */
export class DeviceSession {
  private readonly config: SessionConfig
  private readonly fetchImpl: typeof fetch
  private readonly store: DeviceCredentialStore
  private readonly code: string
  private readonly codeHash: string
  private cached: StoredDeviceCredential | null = null
  private retryAt = 0
  private reenrolled = false
  private pending: Promise<StoredDeviceCredential | null> | null = null
  /** Why the last enrollment failed, for logs and `deltaport devices status`. */
  lastError: string | null = null

  constructor(config: SessionConfig, fetchImpl: typeof fetch = fetch) {
    this.config = config
    this.fetchImpl = fetchImpl
    this.store = new DeviceCredentialStore(config.installRoot)
    this.code = config.enrollmentCode
    this.codeHash = codeSha256(config.enrollmentCode)
  }

  /** The credential to send, enrolling first if there is none (one enrollment at a time). */
  current(): Promise<StoredDeviceCredential | null> {
    if (this.cached !== null) return Promise.resolve(this.cached)
    this.pending ??= this.load().finally(() => {
      this.pending = null
    })
    return this.pending
  }

  /**
   * The edge refused `previous` (invalid, expired, revoked) or wanted a credential this device lacks:
   * enroll again, once per process, renewing the same device id when the edge still recognises it.
   * Null when the code cannot enroll (revoked, expired, full) or the edge is unreachable.
   */
  async reenroll(previous: StoredDeviceCredential | null): Promise<StoredDeviceCredential | null> {
    if (this.reenrolled) return null
    this.reenrolled = true
    this.cached = null
    if (previous !== null) await this.store.forget()
    this.retryAt = 0
    // A refusal remembered on disk (the code was revoked, expired or full) is not asked again.
    return this.enroll(previous?.credential, false)
  }

  private async load(): Promise<StoredDeviceCredential | null> {
    const stored = await this.store.read()
    // A credential from another code (the config changed) is not what the operator asked for now.
    if (stored !== null && stored.codeSha256 === this.codeHash) {
      this.cached = stored
      return stored
    }
    if (Date.now() < this.retryAt) return null
    const refusal = await this.store.refusal()
    if (refusal !== null && refusal.codeSha256 === this.codeHash) {
      this.lastError = `enrollment refused on ${refusal.at}: ${refusal.detail}`
      return null
    }
    return this.enroll(undefined, false)
  }

  /** Enrolls now; `force` ignores a refusal remembered from an earlier run (the edge decides again). */
  async enroll(previous: string | undefined, force: boolean): Promise<StoredDeviceCredential | null> {
    if (!force) {
      const refusal = await this.store.refusal()
      if (refusal !== null && refusal.codeSha256 === this.codeHash) return null
    }
    try {
      const credential = await enrollDevice(this.config.edgeUrl, this.code, {
        ...(previous === undefined ? {} : { previous }),
        fetchImpl: this.fetchImpl,
      })
      await this.store.write(credential)
      this.cached = credential
      this.lastError = null
      return credential
    } catch (error) {
      this.lastError = error instanceof Error ? error.message : String(error)
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
        this.retryAt = Date.now() + ENROLL_RETRY_MS
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
