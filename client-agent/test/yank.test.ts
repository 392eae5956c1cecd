import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { type ArtifactIndex, versionEntry } from '../../schemas/artifact-index.ts'
import { SignedYankStatement, type YankStatement } from '../../schemas/yank-statement.ts'
import type { AgentConfig } from '../config.ts'
import { EdgeClient } from '../edge-client.ts'
import { installArtifact } from '../install.ts'
import { generateKeyPair, signDocument } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import { setYank } from '../yank.ts'
import { planYankRetreat } from '../yank-retreat.ts'
import { cliFailure, writeArtifact } from './fixtures.ts'
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

    const unsigned = await cli('yank', 'cli-pulled@2.0.1', '--reason', 'leaks file descriptors', '--unsigned')
    expect(unsigned.stdout).toContain('cli-pulled@2.0.1 yanked; channels: stable → 2.0.0')
    expect(unsigned.stderr).toContain('devices running it are warned but stay on it')
    const update = await cli('update', 'cli-pulled')
    expect(update.stderr).toContain('cli-pulled@2.0.1 was yanked')
    expect(update.stderr).toContain('leaks file descriptors')
    expect(update.stderr).toContain('the yank is not signed by the maintainer')
    expect(update.stderr).toContain('deltaport rollback cli-pulled')
    expect(update.stdout).toContain('cli-pulled@2.0.1: already current')

    // Signed with the config's signingKey (the default): the device moves back to what it ran before.
    const signed = await cli('yank', 'cli-pulled@2.0.1', '--reason', 'leaks file descriptors')
    expect(signed.stdout).toContain('cli-pulled@2.0.1 yanked (signed); channels: stable → 2.0.0')
    const retreat = await cli('update', 'cli-pulled')
    expect(retreat.stderr).toContain('moved back off cli-pulled@2.0.1')
    expect(retreat.stdout).toContain('cli-pulled@2.0.0: switched to the installed copy')

    const pinned = await cliFailure(cli('--json', 'install', 'cli-pulled@2.0.1', '--wait', '0'))
    expect(pinned?.code).toBe(12)
    expect(JSON.parse(pinned?.stdout ?? '{}')).toMatchObject({ ok: false, error: { code: 'yanked' } })

    const missingReason = await cli('yank', 'cli-pulled@2.0.1').then(
      () => null,
      (error: { code: number; stderr: string }) => error,
    )
    expect(missingReason?.code).toBe(2)
    expect(missingReason?.stderr).toContain('--reason')

    // A restore takes no reason: one given is refused, not dropped unsaid.
    const undoWithReason = await cli('yank', 'cli-pulled@2.0.1', '--undo', '--reason', 'fixed').then(
      () => null,
      (error: { code: number; stderr: string }) => error,
    )
    expect(undoWithReason?.code).toBe(2)
    expect(undoWithReason?.stderr).toContain('takes no --reason')

    const undone = await cli('--json', 'yank', 'cli-pulled@2.0.1', '--undo')
    expect(JSON.parse(undone.stdout)).toMatchObject({
      ok: true,
      yank: { yanked: null, signed: true, channels: { stable: '2.0.1' } },
    })
    // Restored: the device goes forward again (its serial high-water mark is 2.0.1's own).
    expect((await cli('update', 'cli-pulled')).stdout).toContain(
      'cli-pulled@2.0.1: switched to the installed copy',
    )
  })
})

const signedYank = (name: string, version: string, reason: string | null, now?: Date) =>
  setYank({
    edgeUrl: suite.edge.url,
    token: TEST_TOKEN,
    name,
    version,
    reason,
    keyFile: suite.ws.keyFile,
    ...(now ? { now } : {}),
  })

describe('a signed yank', () => {
  it('moves a device back to the version it ran before, once', async () => {
    await publish('retreat', '1.0.0')
    await publish('retreat', '1.1.0')
    const running = device('retreat')
    await installArtifact(running, { name: 'retreat', target: '1.0.0' })
    await installArtifact(running, { name: 'retreat' })

    expect(await signedYank('retreat', '1.1.0', 'drops writes')).toMatchObject({
      signed: true,
      channels: { stable: '1.0.0' },
    })
    expect(await installArtifact(running, { name: 'retreat' })).toMatchObject({
      version: '1.0.0',
      previous: '1.1.0',
      method: 'local',
      bytesDownloaded: 0,
      alreadyCurrent: false,
      retreated: { from: '1.1.0', reason: 'drops writes' },
    })
    expect((await new ArtifactStore(running.installRoot, 'retreat').state()).current).toBe('1.0.0')
    // The next poll finds it current: running 1.0.0 is no rollback, though 1.1.0 raised the serial floor.
    expect(await installArtifact(running, { name: 'retreat' })).toMatchObject({
      version: '1.0.0',
      alreadyCurrent: true,
    })

    // The owner goes back to it on purpose: the statement already acted on does not move it again.
    await installArtifact(running, { name: 'retreat', target: '1.1.0', allowYanked: true })
    const again = await installArtifact(running, { name: 'retreat' })
    expect(again).toMatchObject({ version: '1.1.0', alreadyCurrent: true })
    expect(again.yankedCurrent?.stayed).toContain('already acted on')
  })

  it('installs the channel head instead when it is newer than what the device ran before', async () => {
    await publish('forward', '1.0.0')
    await publish('forward', '1.1.0')
    await publish('forward', '1.2.0')
    const running = device('forward')
    await installArtifact(running, { name: 'forward', target: '1.0.0' })
    await installArtifact(running, { name: 'forward', target: '1.2.0' })

    await signedYank('forward', '1.2.0', 'breaks the schema migration')
    // 1.1.0 has a lower serial than 1.2.0: the signed yank is the one downgrade the agent makes itself.
    const moved = await installArtifact(running, { name: 'forward' })
    expect(moved).toMatchObject({
      version: '1.1.0',
      previous: '1.2.0',
      alreadyCurrent: false,
      retreated: { from: '1.2.0' },
    })
    expect(moved.method).not.toBe('local')
    // A device that ran nothing before the yanked version has no safe place to go: it is warned.
    const fresh = device('forward-fresh')
    await installArtifact(fresh, { name: 'forward', target: '1.2.0', allowYanked: true })
    const stayed = await installArtifact(fresh, { name: 'forward' })
    expect(stayed).toMatchObject({ version: '1.2.0', alreadyCurrent: true })
    expect(stayed.yankedCurrent?.stayed).toContain('ran no older version')
  })

  it('stays when the version it ran before is yanked too, rather than running it again', async () => {
    await publish('both', '0.9.0')
    await publish('both', '1.0.0')
    await publish('both', '1.1.0')
    const running = device('both')
    await installArtifact(running, { name: 'both', target: '1.0.0' })
    await installArtifact(running, { name: 'both' })
    await signedYank('both', '1.0.0', 'corrupts the cache')
    await signedYank('both', '1.1.0', 'drops writes')
    // The channel falls back to 0.9.0, older than 1.0.0, which is on disk but yanked itself.
    const stayed = await installArtifact(running, { name: 'both' })
    expect(stayed).toMatchObject({ version: '1.1.0', alreadyCurrent: true, yankedCurrent: { head: '0.9.0' } })
    expect(stayed.yankedCurrent?.stayed).toBe('the version before it, 1.0.0, is yanked too')
    expect((await new ArtifactStore(running.installRoot, 'both').state()).current).toBe('1.1.0')
  })

  it('is ignored when replayed after a signed restore', async () => {
    await publish('replayed', '1.0.0')
    await publish('replayed', '1.1.0')
    const running = device('replayed')
    await installArtifact(running, { name: 'replayed', target: '1.0.0' })
    await installArtifact(running, { name: 'replayed' })
    const store = new ArtifactStore(running.installRoot, 'replayed')

    const yankedAt = new Date(Date.now() - 60_000)
    await signedYank('replayed', '1.1.0', 'wrong build', yankedAt)
    const captured = versionEntry(await edgeIndex('replayed'), '1.1.0')?.yankStatement
    await signedYank('replayed', '1.1.0', null)
    // This device saw the restore (it runs 1.1.0 and the head is 1.1.0 again): nothing moves.
    expect(await installArtifact(running, { name: 'replayed' })).toMatchObject({ version: '1.1.0' })
    const index = await edgeIndex('replayed')
    const replay = withStatement(index, '1.1.0', captured)
    const plan = await planYankRetreat(running, store, await store.state(), replay, '1.0.0', new Date())
    expect(plan).toEqual({ stayed: expect.stringContaining('already acted on') })
    // A device that never saw the restore would have acted on it: the memory is what stops the replay.
    const forgetful = { ...(await store.state()), yankSeen: {} }
    expect(await planYankRetreat(running, store, forgetful, replay, '1.0.0', new Date())).toMatchObject({
      kind: 'rollback',
      to: '1.0.0',
    })
  })
})

describe('a yank statement the device cannot trust', () => {
  it('leaves it where it is: another key, other bytes, another version, expired', async () => {
    await publish('forged', '1.0.0')
    await publish('forged', '1.1.0')
    const running = device('forged')
    await installArtifact(running, { name: 'forged', target: '1.0.0' })
    await installArtifact(running, { name: 'forged' })
    const store = new ArtifactStore(running.installRoot, 'forged')
    const sha256 = (await store.manifestOf('1.1.0')).signed.sha256
    const now = new Date()
    const said: YankStatement = {
      _type: 'deltaport/yank',
      name: 'forged',
      version: '1.1.0',
      sha256,
      yanked: true,
      reason: 'forged',
      at: now.toISOString(),
      expires: new Date(now.getTime() + 86_400_000).toISOString(),
    }
    const index = await edgeIndex('forged')
    const planWith = async (statement: SignedYankStatement) =>
      planYankRetreat(
        running,
        store,
        await store.state(),
        withStatement(index, '1.1.0', statement),
        '1.0.0',
        now,
      )
    const honest = SignedYankStatement.parse(await signDocument(said, suite.ws.key))
    expect(await planWith(honest)).toMatchObject({ kind: 'rollback', to: '1.0.0' })

    const stranger = SignedYankStatement.parse(await signDocument(said, await generateKeyPair()))
    expect(await planWith(stranger)).toEqual({ stayed: expect.stringContaining('no valid signature') })
    const tampered = { ...honest, signed: { ...said, reason: 'edited after signing' } }
    expect(await planWith(tampered)).toEqual({ stayed: expect.stringContaining('no valid signature') })
    const otherBytes = await signDocument({ ...said, sha256: 'c'.repeat(64) }, suite.ws.key)
    expect(await planWith(otherBytes)).toEqual({ stayed: expect.stringContaining('other bytes') })
    const otherVersion = await signDocument({ ...said, version: '1.0.0' }, suite.ws.key)
    expect(await planWith(otherVersion)).toEqual({ stayed: expect.stringContaining('about forged@1.0.0') })
    const expired = await signDocument(
      { ...said, expires: new Date(now.getTime() - 1).toISOString() },
      suite.ws.key,
    )
    expect(await planWith(expired)).toEqual({ stayed: expect.stringContaining('expired') })
    // None of them moved the device or was remembered.
    expect(await store.state()).toMatchObject({ current: '1.1.0' })
    expect((await store.state()).yankSeen).toBeUndefined()
  })
})

/** The edge's index, as the agent reads it. */
async function edgeIndex(name: string): Promise<ArtifactIndex> {
  return new EdgeClient(suite.edge.url).index(name)
}

/** `index` with `version` yanked and carrying `statement`: what a hostile edge could serve. */
function withStatement(
  index: ArtifactIndex,
  version: string,
  statement: SignedYankStatement | undefined,
): ArtifactIndex {
  return {
    ...index,
    versions: index.versions.map((v) =>
      v.version === version
        ? {
            ...v,
            yanked: { at: new Date().toISOString(), reason: 'replayed' },
            ...(statement ? { yankStatement: statement } : {}),
          }
        : v,
    ),
  }
}
