import { afterAll, beforeAll } from 'vitest'
import { unstable_startWorker } from 'wrangler'
import type { DependencyRef } from '../../schemas/manifest.ts'
import type { Published } from '../../schemas/publish.ts'
import { type PublishRequest, publishArtifact } from '../publish.ts'
import { makeWorkspace, type Workspace } from './fixtures.ts'

export const TEST_TOKEN = 'agent-test-token'
/** OPERATOR_TOKEN of the local edge: the dashboard's bearer token / login password in tests. */
export const TEST_OPERATOR_TOKEN = 'agent-test-operator-token'

/** The key the local edge signs device credentials with (the first of its DEVICE_TOKEN_SECRET ring). */
export const LOCAL_EDGE_DEVICE_SECRET = 'agent-test-device-token-secret'
/** A key the local edge still verifies but no longer signs with (workers/devices/credential.ts). */
export const LOCAL_EDGE_RETIRED_DEVICE_SECRET = 'agent-test-retired-device-key'

export interface LocalEdge {
  url: string
  dispose(): Promise<void>
  /**
   * Writes the runtime config document (KV `CONFIG`, key `runtime`), as `wrangler kv key put` does.
   * Each isolate caches the config for `cacheTtlSeconds` (30 by default), so write it before the first
   * request that reads it.
   */
  putRuntimeConfig(document: unknown): Promise<void>
  /** Runs the cron trigger's handler (the retention pass) now, as the daily cron does; throws if it fails. */
  runScheduled(at?: Date): Promise<void>
}

/** What the local runtime's Miniflare offers, as far as these helpers use it. */
interface LocalMiniflare {
  getKVNamespace(binding: string): Promise<{ put(key: string, value: string): Promise<void> }>
  getWorker(): Promise<{ scheduled(options: { scheduledTime: Date }): Promise<{ outcome: string }> }>
}

/**
 * The real edge (workerd, R2, KV, DOs) on a loopback port, fresh state per call. `vars` override
 * wrangler.toml [vars] and the secrets above for a test (e.g. a small single-PUT cap to force multipart).
 */
export async function startLocalEdge(vars: Record<string, string> = {}): Promise<LocalEdge> {
  // Miniflare otherwise downloads a Request.cf sample from the internet at start-up; nothing may.
  process.env.CLOUDFLARE_CF_FETCH_ENABLED = 'false'
  const secrets: Record<string, string> = {
    PUBLISH_TOKEN: TEST_TOKEN,
    OPERATOR_TOKEN: TEST_OPERATOR_TOKEN,
    // Mid-rotation, as an operator would run it: the signing key, then a retired one still verified.
    DEVICE_TOKEN_SECRET: `${LOCAL_EDGE_DEVICE_SECRET} ${LOCAL_EDGE_RETIRED_DEVICE_SECRET}`,
    // Blank: the edge stores envelopes unchecked, so tests can publish what a device must refuse
    // (unknown keys, tampered fields). maintainer-keys.test.ts passes keys through `vars`.
    MAINTAINER_KEYS: '',
    // Blank: indexes unsigned; index-trust.test.ts passes a key through `vars`.
    INDEX_SIGNING_KEY: '',
  }
  const worker = await unstable_startWorker({
    config: 'wrangler.toml',
    bindings: {
      ...Object.fromEntries(
        Object.entries({ ...secrets, ...vars }).map(([k, value]) => [
          k,
          // An override of a secret stays a secret, so wrangler does not report it missing.
          { type: k in secrets ? ('secret_text' as const) : ('plain_text' as const), value },
        ]),
      ),
    },
    dev: { server: { hostname: '127.0.0.1', port: 0 }, inspector: false, persist: false, logLevel: 'warn' },
  })
  const url = (await worker.url).toString().replace(/\/$/, '')
  // wrangler's local runtime (the first runtime controller) holds the Miniflare that runs the edge: its
  // bindings and handlers are the ones the served requests use. It is set a moment after `ready`.
  const miniflare = async (): Promise<LocalMiniflare> => {
    await worker.ready
    for (let waited = 0; ; waited += 50) {
      const mf = (worker.raw.runtimes[0] as unknown as { mf?: LocalMiniflare }).mf
      if (mf !== undefined) return mf
      if (waited > 30_000) throw new Error('the local edge has no running Miniflare')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  return {
    url,
    dispose: () => worker.dispose(),
    async putRuntimeConfig(document) {
      await (await (await miniflare()).getKVNamespace('CONFIG')).put('runtime', JSON.stringify(document))
    },
    async runScheduled(at = new Date()) {
      const result = await (await (await miniflare()).getWorker()).scheduled({ scheduledTime: at })
      if (result.outcome !== 'ok') throw new Error(`the scheduled handler ended ${result.outcome}`)
    },
  }
}

/**
 * A suite's shared setup: a fresh local edge and a workspace (maintainer key, trusting device config)
 * for the whole file, disposed after it. Read `edge` and `ws` inside tests, once `beforeAll` has run.
 */
export function useEdgeWorkspace(
  vars: Record<string, string> = {},
  options: { runtimeConfig?: unknown } = {},
): {
  readonly edge: LocalEdge
  readonly ws: Workspace
  /** `deltaport publish` of `file` to this suite's edge with its maintainer key. */
  publish(
    file: string,
    name: string,
    version: string,
    extra?: { expiresInDays?: number; dependencies?: DependencyRef[]; deltas?: PublishRequest['deltas'] },
  ): Promise<Published>
} {
  let edge: LocalEdge | undefined
  let ws: Workspace | undefined
  beforeAll(async () => {
    edge = await startLocalEdge(vars)
    // Before any request, so no isolate has cached the defaults.
    if (options.runtimeConfig !== undefined) await edge.putRuntimeConfig(options.runtimeConfig)
    ws = await makeWorkspace(edge.url)
  })
  afterAll(async () => {
    await edge?.dispose()
  })
  return {
    get edge() {
      if (!edge) throw new Error('the local edge is not started yet (use it inside tests or hooks)')
      return edge
    },
    get ws() {
      if (!ws) throw new Error('the workspace is not ready yet (use it inside tests or hooks)')
      return ws
    },
    publish(file, name, version, extra = {}) {
      return publishArtifact({
        edgeUrl: this.edge.url,
        token: TEST_TOKEN,
        keyFile: this.ws.keyFile,
        file,
        name,
        version,
        ...extra,
      })
    },
  }
}
