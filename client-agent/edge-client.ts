import { setTimeout as sleep } from 'node:timers/promises'
import { ArtifactIndex } from '../schemas/artifact-index.ts'
import { SignedManifest } from '../schemas/manifest.ts'
import { SignedRoot } from '../schemas/root.ts'
import type { TrustedKey } from '../schemas/signed-envelope.ts'
import { AgentError, type AgentErrorCode } from './errors.ts'
import { type IndexTrust, verifyServedIndex } from './index-trust.ts'
import { ArtifactStore } from './store.ts'
import { retryWaitMs } from './transfer/backoff.ts'
import { errorFromResponse, retryAfterSeconds } from './transfer/error-response.ts'
import { withHeaderTimeout } from './transfer/header-timeout.ts'
import type { ReadBodyOptions } from './transfer/read-body.ts'
import { JSON_LIMITS, readJsonBounded } from './transfer/read-json.ts'
import type { MaintainerTrust } from './trust.ts'

/** Names travel as one URL segment (`@scope%2Fname`), like the npm registry. */
export function artifactPath(name: string, version?: string): string {
  const base = `/v1/artifacts/${encodeURIComponent(name)}`
  return version ? `${base}/${version}` : base
}

/**
 * Where the edge serves root metadata `version` (GET) and where publishers store it (PUT); `latest` is
 * the newest root it holds (GET only).
 */
export function rootPath(version: number | 'latest'): string {
  return `/v1/roots/${version}`
}

export interface EdgeClientOptions extends Pick<ReadBodyOptions, 'stallMs' | 'minRate'> {
  indexTrust?: IndexTrust
}

/**
 * What a device's config asks of the indexes it reads (ADR 0032): its indexKeys, and never an index
 * older than what its store installed of that artifact or saw in a verified index, each counted only
 * under the keys the device trusts now (ADR 0037); `now` is the trust checks' clock.
 */
export function deviceEdgeOptions(
  config: MaintainerTrust & { indexKeys: readonly TrustedKey[]; installRoot: string },
  now?: Date,
): EdgeClientOptions {
  return {
    indexTrust: {
      keys: config.indexKeys,
      now: () => now ?? new Date(),
      serials: async (name) => {
        const store = new ArtifactStore(config.installRoot, name)
        return {
          installed: await store.serialFloor(config),
          seen: await store.indexSerialSeen(config.indexKeys),
        }
      },
      sawIndex: (name, serial) =>
        new ArtifactStore(config.installRoot, name).recordIndexSerial(serial, config.indexKeys),
    },
  }
}

/** Typed access to the edge's HTTP API; every body that comes back is parsed before use. */
export class EdgeClient {
  readonly baseUrl: string
  private readonly fetchImpl: typeof fetch
  /** How JSON answers may stall or trickle before they fail (readBody's defaults for what is unset). */
  private readonly readOptions: Pick<ReadBodyOptions, 'stallMs' | 'minRate'>
  /** Set on devices whose config names indexKeys: every index must carry a fresh signed statement. */
  private readonly indexTrust: IndexTrust | undefined

  constructor(baseUrl: string, fetchImpl: typeof fetch = fetch, options: EdgeClientOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '')
    this.fetchImpl = withHeaderTimeout(fetchImpl, options.stallMs)
    const { indexTrust, ...readOptions } = options
    this.readOptions = readOptions
    this.indexTrust = indexTrust && indexTrust.keys.length > 0 ? indexTrust : undefined
  }

  url(path: string): string {
    return `${this.baseUrl}${path}`
  }

  /**
   * One call to the edge. A 503 (the edge's answer to a storage or backing service fault, or a delta
   * being generated; a load balancer's to a dead origin) is retried up to twice when the body can be
   * sent again, after the agent's back-off or the answer's Retry-After (up to 5 s), whichever is longer.
   */
  async request(path: string, init: RequestInit = {}): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      const response = await this.send(path, init)
      const waitMs = retryDelayMs(response, attempt, init)
      if (waitMs === null) return response
      await response.body?.cancel().catch(() => undefined)
      await sleep(waitMs, undefined, init.signal ? { signal: init.signal } : {})
    }
  }

  /**
   * One call to the edge and no retry of its own: for a caller that retries with the agent's back-off
   * itself (withRetries: chunk-sync's ranges), where request's in-place retries of a 503 multiplied its
   * tries (4 tries of 3 calls each).
   */
  requestOnce(path: string, init: RequestInit = {}): Promise<Response> {
    return this.send(path, init)
  }

  private async send(path: string, init: RequestInit): Promise<Response> {
    try {
      return await this.fetchImpl(this.url(path), init)
    } catch (error) {
      if (init.signal?.aborted || error instanceof AgentError) throw error
      throw new AgentError('network', `cannot reach the edge at ${this.baseUrl}: ${(error as Error).message}`)
    }
  }

  /** The artifact's index; with index trust (indexKeys), only under a fresh statement (index-trust.ts). */
  async index(name: string): Promise<ArtifactIndex> {
    const response = await this.request(artifactPath(name))
    if (!response.ok) throw await errorFromResponse(response, `listing ${name}`)
    return this.indexFrom(response, name)
  }

  /**
   * The index as `index` reads it, or null when the edge lists no such artifact (404: nothing published
   * yet). One request: asking for the status first and then for the index cost two, and left the first
   * answer's body unread.
   */
  async indexIfListed(name: string): Promise<ArtifactIndex | null> {
    const response = await this.request(artifactPath(name))
    if (response.status === 404) {
      await response.body?.cancel()
      return null
    }
    if (!response.ok) throw await errorFromResponse(response, `listing ${name}`)
    return this.indexFrom(response, name)
  }

  private async indexFrom(response: Response, name: string): Promise<ArtifactIndex> {
    // Bounded and stall-timed: an endless or trickling answer must not hold the agent (TUF endless data).
    const json = await readJsonBounded(
      response,
      JSON_LIMITS.index,
      `the index of ${name}`,
      this.jsonOptions(),
    )
    if (this.indexTrust) return verifyServedIndex(json, name, this.indexTrust)
    return parseWith(ArtifactIndex, json, `index of ${name}`)
  }

  /** The envelope as served; the caller verifies signatures before trusting any field. */
  async manifest(name: string, version: string): Promise<SignedManifest> {
    const response = await this.request(`${artifactPath(name, version)}/manifest`)
    if (!response.ok) throw await errorFromResponse(response, `manifest of ${name}@${version}`)
    const json = await readJsonBounded(response, JSON_LIMITS.manifest, `the manifest of ${name}@${version}`, {
      ...this.jsonOptions(),
      code: 'untrusted-manifest',
    })
    const parsed = SignedManifest.safeParse(json)
    if (!parsed.success)
      throw new AgentError('untrusted-manifest', `the manifest of ${name}@${version} is malformed`)
    return parsed.data
  }

  /**
   * Root metadata `version` as served (ADR 0035), or null when the edge has none of that version (the
   * chain ends there); the caller checks its signatures before trusting it.
   */
  root(version: number): Promise<SignedRoot | null> {
    return this.servedRoot(version)
  }

  /**
   * The newest root the edge holds, or null when it holds none yet (`deltaport root show`). Whatever
   * its version, it is only as trustworthy as the chain from a root the caller already trusts.
   */
  latestRoot(): Promise<SignedRoot | null> {
    return this.servedRoot('latest')
  }

  private async servedRoot(version: number | 'latest'): Promise<SignedRoot | null> {
    const what = version === 'latest' ? 'the latest root' : `root ${version}`
    const response = await this.request(rootPath(version))
    if (response.status === 404) {
      await response.body?.cancel().catch(() => undefined)
      return null
    }
    if (!response.ok) throw await errorFromResponse(response, what)
    const json = await readJsonBounded(response, JSON_LIMITS.root, what, {
      ...this.jsonOptions(),
      code: 'untrusted-root',
    })
    const parsed = SignedRoot.safeParse(json)
    if (!parsed.success) throw new AgentError('untrusted-root', `${what} from the edge is malformed`)
    return parsed.data
  }

  private jsonOptions(): Pick<ReadBodyOptions, 'stallMs' | 'minRate'> {
    return this.readOptions
  }

  /**
   * Any other JSON answer of this edge, read as the ones above are: at most `maxBytes`, under this
   * client's stall timer and minimum rate (TUF endless data, slow retrieval). Parsed, not validated.
   */
  readJson(response: Response, maxBytes: number, what: string, code?: AgentErrorCode): Promise<unknown> {
    return readJsonBounded(response, maxBytes, what, { ...this.jsonOptions(), ...(code ? { code } : {}) })
  }

  /**
   * readJson, then `schema`: an answer cut mid-body (`network`, exit 4), too large, not JSON or not
   * of the schema's shape (`edge-rejected`, exit 5) is an AgentError, never a bare TypeError,
   * SyntaxError or ZodError (exit 70) or an unbounded read. For the maintainer's commands, whose
   * answers are not signed. `what` reads as "the answer to …".
   */
  async readParsed<T>(response: Response, schema: Schema<T>, maxBytes: number, what: string): Promise<T> {
    const parsed = schema.safeParse(await this.readJson(response, maxBytes, what))
    if (!parsed.success) throw new AgentError('edge-rejected', `the edge sent ${what} that is malformed`)
    return parsed.data
  }

  blobUrl(name: string, version: string): string {
    return this.url(`${artifactPath(name, version)}/blob`)
  }
}

/** Retries of a 503 per request, and the longest Retry-After worth waiting for in place. */
const MAX_RETRIES = 2
const MAX_RETRY_AFTER_SECONDS = 5

/**
 * How long to wait before sending a request again after `response`, or null to hand the answer back:
 * a 503 whose body can be sent again is retried twice, after the agent's back-off (retryWaitMs: jittered,
 * so devices an edge restart turned away together do not come back together) or the Retry-After it
 * carries, if longer; one asking for more than 5 s is handed back (the command fails, exit 5).
 */
function retryDelayMs(response: Response, attempt: number, init: RequestInit): number | null {
  if (response.status !== 503 || attempt >= MAX_RETRIES) return null
  const body = init.body
  const replayable =
    body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array
  if (!replayable) return null
  const seconds = retryAfterSeconds(response) ?? 0
  if (seconds > MAX_RETRY_AFTER_SECONDS) return null
  return retryWaitMs(attempt + 1, seconds * 1000)
}

/** What readParsed takes: a zod schema of whatever output type, without naming zod's generics here. */
type Schema<T> = { safeParse(v: unknown): { success: true; data: T } | { success: false } }

function parseWith<T>(schema: Schema<T>, value: unknown, what: string): T {
  const parsed = schema.safeParse(value)
  if (!parsed.success) throw new AgentError('edge-rejected', `the edge sent a malformed ${what}`)
  return parsed.data
}
