import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { installArtifact } from '../install.ts'
import { ArtifactStore } from '../store.ts'
import { setYank } from '../yank.ts'
import { writeArtifact } from './fixtures.ts'
import { TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
const run = promisify(execFile)

async function publish(name: string, version: string) {
  const art = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, 3_000)
  await suite.publish(art.path, name, version)
}

/** Another device: the same edge and keys, its own install root. */
function device(label: string): AgentConfig {
  return { ...suite.ws.config, installRoot: join(suite.ws.dir, `store-${label}`) }
}

const yank = (name: string, version: string, reason: string | null) =>
  setYank({ edgeUrl: suite.edge.url, token: TEST_TOKEN, name, version, reason })

describe('a yanked release', () => {
  it('is no longer installed through its channel, and a device running it is told, not moved back', async () => {
    await publish('pulled', '1.0.0')
    await publish('pulled', '1.1.0')
    const running = device('running')
    await installArtifact(running, { name: 'pulled', target: '1.0.0' })
    expect(await installArtifact(running, { name: 'pulled' })).toMatchObject({ version: '1.1.0' })

    const yanked = await yank('pulled', '1.1.0', 'corrupts the cache on start')
    expect(yanked).toMatchObject({
      yanked: { reason: 'corrupts the cache on start' },
      channels: { stable: '1.0.0' },
    })

    // A fresh device gets 1.0.0 from the channel.
    expect(await installArtifact(device('fresh'), { name: 'pulled' })).toMatchObject({ version: '1.0.0' })
    // The device on 1.1.0 stays there (an unsigned index must not roll devices back) and learns why.
    const update = await installArtifact(running, { name: 'pulled' })
    expect(update).toMatchObject({
      version: '1.1.0',
      alreadyCurrent: true,
      bytesDownloaded: 0,
      yankedCurrent: { version: '1.1.0', reason: 'corrupts the cache on start', head: '1.0.0' },
    })
    expect((await new ArtifactStore(running.installRoot, 'pulled').state()).current).toBe('1.1.0')

    // Pinned: refused with its own code unless asked for; `latest` skips it.
    await expect(
      installArtifact(device('pinned'), { name: 'pulled', target: '1.1.0' }),
    ).rejects.toMatchObject({
      code: 'yanked',
    })
    expect(
      await installArtifact(device('pinned'), { name: 'pulled', target: '1.1.0', allowYanked: true }),
    ).toMatchObject({ version: '1.1.0' })
    expect(await installArtifact(device('latest'), { name: 'pulled', target: 'latest' })).toMatchObject({
      version: '1.0.0',
    })

    // Restored: the channel points at it again and the running device is simply current.
    expect(await yank('pulled', '1.1.0', null)).toMatchObject({ yanked: null, channels: { stable: '1.1.0' } })
    const after = await installArtifact(running, { name: 'pulled' })
    expect(after).toMatchObject({ version: '1.1.0', alreadyCurrent: true })
    expect(after.yankedCurrent).toBeUndefined()
  })

  it('from the CLI: yank, the warning on update, exit 12 for a pinned install, --undo', async () => {
    await publish('cli-pulled', '2.0.0')
    await publish('cli-pulled', '2.0.1')
    const env = { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN }
    const cli = (...args: string[]) =>
      run(process.execPath, [BIN, '--config', suite.ws.configFile, ...args], { env })
    await cli('install', 'cli-pulled@2.0.0')
    await cli('update', 'cli-pulled')

    const yanked = await cli('yank', 'cli-pulled@2.0.1', '--reason', 'leaks file descriptors')
    expect(yanked.stdout).toContain('cli-pulled@2.0.1 yanked; channels: stable → 2.0.0')
    const update = await cli('update', 'cli-pulled')
    expect(update.stderr).toContain('cli-pulled@2.0.1 was yanked')
    expect(update.stderr).toContain('leaks file descriptors')
    expect(update.stderr).toContain('deltaport rollback cli-pulled')
    expect(update.stdout).toContain('cli-pulled@2.0.1: already current')

    const pinned = await cli('--json', 'install', 'cli-pulled@2.0.1', '--wait', '0').then(
      () => null,
      (error: { code: number; stdout: string }) => error,
    )
    expect(pinned?.code).toBe(12)
    expect(JSON.parse(pinned?.stdout ?? '{}')).toMatchObject({ ok: false, error: { code: 'yanked' } })

    const missingReason = await cli('yank', 'cli-pulled@2.0.1').then(
      () => null,
      (error: { code: number; stderr: string }) => error,
    )
    expect(missingReason?.code).toBe(2)
    expect(missingReason?.stderr).toContain('--reason')

    const undone = await cli('--json', 'yank', 'cli-pulled@2.0.1', '--undo')
    expect(JSON.parse(undone.stdout)).toMatchObject({
      ok: true,
      yank: { yanked: null, channels: { stable: '2.0.1' } },
    })
  })
})
