import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { installArtifact } from '../install.ts'
import { ArtifactStore } from '../store.ts'
import { type FaultProxy, type SeenRequest, startFaultProxy } from './fault-proxy.ts'
import { agentFailure, writeArtifact } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

/**
 * Whoever answers for the edge (a mirror, a man in the middle of an http edge) redirecting the agent to
 * another host: fetch follows any redirect by default, so plan steps being edge paths (EDGE_PATH) kept
 * nothing from reaching a service on the device's network or a cloud metadata address. The agent now
 * follows none (transfer/header-timeout.ts).
 */

const suite = useEdgeWorkspace()

/** Stands for what a redirect would aim the agent at (`http://169.254.169.254/…`): counts what reaches it. */
let bystander: Server
let bystanderUrl = ''
const reached: string[] = []
beforeAll(async () => {
  bystander = createServer((req, res) => {
    reached.push(`${req.method} ${req.url}`)
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"secret":"instance credentials"}')
  })
  await new Promise<void>((resolve) => bystander.listen(0, '127.0.0.1', resolve))
  bystanderUrl = `http://127.0.0.1:${(bystander.address() as AddressInfo).port}`
})
afterAll(async () => {
  await new Promise<void>((resolve) => bystander.close(() => resolve()))
})

let proxy: FaultProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
  reached.length = 0
})

/** `name@1.0.0` published, and a device of its own behind a proxy redirecting what `redirects` picks. */
async function deviceBehindRedirects(
  name: string,
  redirects: (request: SeenRequest) => boolean,
): Promise<AgentConfig> {
  const artifact = await writeArtifact(suite.ws.dir, `${name}.bin`, 4_000)
  await suite.publish(artifact.path, name, '1.0.0')
  proxy = await startFaultProxy(suite.edge.url, (request) =>
    redirects(request) ? { kind: 'redirect', location: `${bystanderUrl}/latest/meta-data/` } : undefined,
  )
  return { ...suite.ws.config, edgeUrl: proxy.url, installRoot: join(suite.ws.dir, `store-${name}`) }
}

describe('an edge answering with a redirect', () => {
  for (const [what, picks] of [
    ['the index', (r: SeenRequest) => r.path === '/v1/artifacts/redir-index'],
    ['the manifest', (r: SeenRequest) => r.path.endsWith('/redir-manifest/1.0.0/manifest')],
    ['the blob', (r: SeenRequest) => r.path.endsWith('/redir-blob/1.0.0/blob')],
  ] as const) {
    it(`for ${what}: not followed to another host, and nothing installed`, async () => {
      const name = `redir-${what.split(' ')[1]}`
      const config = await deviceBehindRedirects(name, picks)
      const error = await agentFailure(installArtifact(config, { name }))
      expect(error.code).toBe('edge-rejected')
      expect(error.message).toContain(`redirect (302) to ${bystanderUrl}/latest/meta-data/`)
      expect(reached).toEqual([])
      expect((await new ArtifactStore(config.installRoot, name).state()).current).toBeNull()
    })
  }

  it('for the plan: not followed, and the signed full artifact is installed from the edge instead', async () => {
    const config = await deviceBehindRedirects('redir-plan', (r) => r.path === '/v1/plan')
    // A base installed first, so the update asks for a plan.
    await installArtifact(config, { name: 'redir-plan' })
    const next = await writeArtifact(suite.ws.dir, 'redir-plan-1.1.0.bin', 4_000)
    await suite.publish(next.path, 'redir-plan', '1.1.0')
    const installed = await installArtifact(config, { name: 'redir-plan' })
    expect(installed).toMatchObject({ version: '1.1.0', method: 'full' })
    expect(proxy?.seen().some((r) => r.path === '/v1/plan')).toBe(true)
    expect(reached).toEqual([])
  })
})
