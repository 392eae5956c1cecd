/**
 * `deltaport rollback` and keys revoked after the device's last poll (ADR 0035, amended 2026-11-26):
 * with the edge reachable, rollback follows the root chain first, as an update does, and refuses a kept
 * release only a key revoked since signed; with the edge unreachable it goes by the roots it already
 * verified and says how old that knowledge is. A real local edge; the CLI as a user runs it.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { SignedRoot } from '../../schemas/root.ts'
import type { AgentConfig } from '../config.ts'
import { installArtifact } from '../install.ts'
import { trustedRootPath } from '../root-trust.ts'
import { generateKeyPair, signDocumentByAll } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import { jsonCli } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'
import { publishSignedByAll, putRoot, rootBody } from './roots.ts'

const suite = useEdgeWorkspace()

const [rootKey, revoked, kept] = await Promise.all([generateKeyPair(), generateKeyPair(), generateKeyPair()])

/** A device that ships `root` and names no keys, its store in `store`, its config file beside it. */
async function device(store: string, root: SignedRoot, edgeUrl = suite.edge.url) {
  const rootFile = join(suite.ws.dir, `${store}-root.json`)
  await writeFile(rootFile, JSON.stringify(root))
  const config: AgentConfig = {
    ...suite.ws.config,
    edgeUrl,
    installRoot: join(suite.ws.dir, store),
    trustedKeys: [],
    root: rootFile,
  }
  const configFile = join(suite.ws.dir, `${store}.json`)
  await writeFile(configFile, JSON.stringify({ edgeUrl, root: rootFile, installRoot: config.installRoot }))
  return { config, configFile }
}

const currentOf = async (config: AgentConfig) =>
  (await new ArtifactStore(config.installRoot, 'fw').state()).current

describe('deltaport rollback and a key revoked after the last poll', () => {
  it('asks the edge for newer roots first, or says how old its revocations are when it cannot', async () => {
    const root1 = await signDocumentByAll(rootBody(1, { root: [rootKey], maintainers: [revoked, kept] }), [
      rootKey,
    ])
    await putRoot(suite.edge.url, root1)
    // 1.0.0 signed only by the key about to be revoked, 1.1.0 by the one that stays.
    await publishSignedByAll(suite.edge.url, suite.ws.dir, { name: 'fw', version: '1.0.0' }, [revoked])
    await publishSignedByAll(suite.edge.url, suite.ws.dir, { name: 'fw', version: '1.1.0' }, [kept])
    const online = await device('store-online', root1)
    const offline = await device('store-offline', root1)
    for (const { config } of [online, offline]) {
      await installArtifact(config, { name: 'fw', target: '1.0.0' })
      // The last poll: root 1 is still the newest the edge serves.
      await installArtifact(config, { name: 'fw', target: '1.1.0' })
    }

    // Root 2 revokes the key after both devices' last poll.
    await putRoot(
      suite.edge.url,
      await signDocumentByAll(rootBody(2, { root: [rootKey], maintainers: [kept] }), [rootKey]),
    )

    // Reachable: the chain is followed first, and the kept 1.0.0 is refused (exit 7) until the owner
    // says otherwise.
    const refused = await jsonCli(online.configFile, ['rollback', 'fw'])
    expect(refused.code, refused.stdout).toBe(7)
    expect(refused.stdout).toContain('"code":"untrusted-manifest"')
    expect(refused.stdout).toContain(`signed by ${revoked.keyid}, no longer trusted`)
    expect(refused.stdout).toContain('--allow-revoked')
    expect(await currentOf(online.config)).toBe('1.1.0')
    // What it followed is kept, as an update keeps it: the next offline check knows root 2 too.
    const keptRoot = JSON.parse(await readFile(trustedRootPath(online.config.installRoot), 'utf8')) as {
      root: SignedRoot
    }
    expect(keptRoot.root.signed.version).toBe(2)
    const allowed = await jsonCli(online.configFile, ['rollback', 'fw', '--allow-revoked'])
    expect(allowed.code, allowed.stdout).toBe(0)
    expect(await currentOf(online.config)).toBe('1.0.0')

    // Unreachable (nothing listens on port 9): the revocations it knew at its last poll decide, and
    // the answer says which root that was and when the edge last confirmed it.
    const unreachable = { ...offline.config, edgeUrl: 'http://127.0.0.1:9' }
    await writeFile(
      offline.configFile,
      JSON.stringify({
        edgeUrl: unreachable.edgeUrl,
        root: offline.config.root,
        installRoot: offline.config.installRoot,
      }),
    )
    const stale = await jsonCli(offline.configFile, ['rollback', 'fw'])
    expect(stale.code, stale.stdout).toBe(0)
    expect(stale.json?.rollback).toMatchObject({ from: '1.1.0', to: '1.0.0' })
    const warning = (stale.json?.rollback as { revocationsUnrefreshed?: string } | undefined)
      ?.revocationsUnrefreshed
    expect(warning).toMatch(
      /^could not ask the edge for newer root metadata \(cannot reach the edge at http:\/\/127\.0\.0\.1:9/,
    )
    expect(warning).toMatch(
      /checked against the revocations of root 1, which the edge last confirmed as its newest at or after \S+ \(\d+ minutes? ago\): a key revoked after that is not known here$/,
    )

    // An edge that takes the connection and says nothing (a network already in trouble, as it often is
    // when an owner rolls back) holds the rollback 5 s, not the 30 s an ordinary request waits.
    const silent = createServer(() => undefined)
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    try {
      const { port } = silent.address() as AddressInfo
      await writeFile(
        offline.configFile,
        JSON.stringify({
          edgeUrl: `http://127.0.0.1:${port}`,
          root: offline.config.root,
          installRoot: offline.config.installRoot,
        }),
      )
      const started = Date.now()
      const back = await jsonCli(offline.configFile, ['rollback', 'fw'])
      expect(back.code, back.stdout).toBe(0)
      expect(back.json?.rollback).toMatchObject({ from: '1.0.0', to: '1.1.0' })
      expect(
        (back.json?.rollback as { revocationsUnrefreshed?: string } | undefined)?.revocationsUnrefreshed,
      ).toContain('the edge sent no answer within 5000 ms')
      expect(Date.now() - started).toBeLessThan(20_000)
    } finally {
      silent.closeAllConnections()
      await new Promise((resolve) => silent.close(resolve))
    }
  }, 90_000)
})
