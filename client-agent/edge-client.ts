import { ArtifactIndex } from '../schemas/artifact-index.ts'
import { SignedManifest } from '../schemas/manifest.ts'
import { AgentError, errorFromResponse } from './errors.ts'

/** Names travel as one URL segment (`@scope%2Fname`), like the npm registry. */
export function artifactPath(name: string, version?: string): string {
  const base = `/v1/artifacts/${encodeURIComponent(name)}`
  return version ? `${base}/${version}` : base
}

/** Typed access to the edge's HTTP API; every body that comes back is parsed before use. */
export class EdgeClient {
  readonly baseUrl: string
  private readonly fetchImpl: typeof fetch

  constructor(baseUrl: string, fetchImpl: typeof fetch = fetch) {
    this.baseUrl = baseUrl.replace(/\/+$/, '')
    this.fetchImpl = fetchImpl
  }

  url(path: string): string {
    return `${this.baseUrl}${path}`
  }

  async request(path: string, init: RequestInit = {}): Promise<Response> {
    try {
      return await this.fetchImpl(this.url(path), init)
    } catch (error) {
      if (init.signal?.aborted) throw error
      throw new AgentError('network', `cannot reach the edge at ${this.baseUrl}: ${(error as Error).message}`)
    }
  }

  async index(name: string): Promise<ArtifactIndex> {
    const response = await this.request(artifactPath(name))
    if (!response.ok) throw await errorFromResponse(response, `listing ${name}`)
    return parseWith(ArtifactIndex, await response.json(), `index of ${name}`)
  }

  /** The envelope as served; the caller verifies signatures before trusting any field. */
  async manifest(name: string, version: string): Promise<SignedManifest> {
    const response = await this.request(`${artifactPath(name, version)}/manifest`)
    if (!response.ok) throw await errorFromResponse(response, `manifest of ${name}@${version}`)
    let json: unknown
    try {
      json = await response.json()
    } catch {
      throw new AgentError('untrusted-manifest', `the manifest of ${name}@${version} is not JSON`)
    }
    const parsed = SignedManifest.safeParse(json)
    if (!parsed.success)
      throw new AgentError('untrusted-manifest', `the manifest of ${name}@${version} is malformed`)
    return parsed.data
  }

  blobUrl(name: string, version: string): string {
    return this.url(`${artifactPath(name, version)}/blob`)
  }
}

function parseWith<T>(
  schema: { safeParse(v: unknown): { success: true; data: T } | { success: false } },
  value: unknown,
  what: string,
): T {
  const parsed = schema.safeParse(value)
  if (!parsed.success) throw new AgentError('edge-rejected', `the edge sent a malformed ${what}`)
  return parsed.data
}
