import { execFile, spawn } from 'node:child_process'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEFAULT_MAX_FAILURE_RATE, DEFAULT_MIN_SAMPLE } from '../../schemas/rollout.ts'
import { lockArtifact } from '../fs/artifact-lock.ts'
import { generateKeyPair } from '../signing.ts'
import { ArtifactStore } from '../store.ts'
import { expectSameBytes, makeWorkspace, type Workspace, writeArtifact } from './fixtures.ts'
import { type LocalEdge, startLocalEdge, TEST_TOKEN } from './local-edge.ts'

const run = promisify(execFile)
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')

let edge: LocalEdge
let ws: Workspace

beforeAll(async () => {
  // A small single-PUT cap makes the CLI take the multipart path for anything over 8 MiB.
  edge = await startLocalEdge({ MAX_SINGLE_PUT_BYTES: String(8 * 1024 * 1024) })
  ws = await makeWorkspace(edge.url)
})
afterAll(async () => {
  await edge?.dispose()
})

const cli = (args: string[], env: Record<string, string> = {}) => runWithConfig(ws.configFile, args, env)

async function runWithConfig(configFile: string, args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, '--config', configFile, ...args], {
      env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN, ...env },
      maxBuffer: 16 * 1024 * 1024,
    })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

/**
 * The CLI started in the background: what it has printed so far can be read while it runs, so a test
 * waits for what it says (not for a fixed time a loaded machine may overrun).
 */
function startCli(args: string[]) {
  const child = spawn(process.execPath, [BIN, '--config', ws.configFile, ...args], {
    env: { ...process.env, DELTAPORT_TOKEN: TEST_TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk
  })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk
  })
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
  /** Resolves once stderr contains `text`; fails if the CLI exits first or `timeoutMs` passes. */
  async function untilStderr(text: string, timeoutMs: number) {
    const deadline = Date.now() + timeoutMs
    while (!stderr.includes(text)) {
      if (child.exitCode !== null)
        throw new Error(`CLI exited (${child.exitCode}) before saying "${text}": ${stderr}`)
      if (Date.now() > deadline) {
        child.kill()
        throw new Error(`CLI did not say "${text}" within ${timeoutMs} ms: ${stderr}`)
      }
      await sleep(25)
    }
  }
  return { done, untilStderr }
}

describe('deltaport CLI', () => {
  it('keygen writes a key file that publish can use', async () => {
    const out = join(ws.dir, 'fresh.key.json')
    const result = await cli(['--json', 'keygen', '--out', out])
    expect(result.code).toBe(0)
    const printed = JSON.parse(result.stdout) as { keyid: string }
    expect(JSON.parse(await readFile(out, 'utf8')).keyid).toBe(printed.keyid)
    expect((await cli(['keygen', '--out', out])).code).toBe(3)
    // A folder that does not exist is the file system's answer, like every other command's (exit 10).
    expect((await cli(['keygen', '--out', join(ws.dir, 'no-such-dir', 'k.json')])).code).toBe(10)
  })

  it('an artifact name that is refused says why, name@version where a name is wanted is named as such (before any config is read), and status of one not installed is not-found', async () => {
    const noConfig = join(ws.dir, 'no-such-config.json')
    for (const command of ['status', 'rollback', 'uninstall']) {
      const slip = await runWithConfig(noConfig, ['--json', command, 'app@1.0.0'])
      expect(slip.code).toBe(2)
      const error = (JSON.parse(slip.stdout) as { error: { code: string; message: string } }).error
      expect(error.code).toBe('usage')
      expect(error.message).toContain(
        '"app@1.0.0" names a version: this command takes the artifact name alone (app)',
      )
    }
    // Nothing of it here (or only what a prefetch left): not found, as rollback and uninstall say.
    const absent = await cli(['--json', 'status', 'never-installed'])
    expect(absent.code).toBe(6)
    expect(JSON.parse(absent.stdout).error).toMatchObject({
      code: 'not-found',
      message: 'never-installed is not installed',
    })
    const upper = await cli(['status', 'App'])
    expect(upper.code).toBe(2)
    expect(upper.stderr).toContain('"App" is not an artifact name: lowercase letters')
    const channel = await cli(['rollout', 'status', 'app', '--channel', 'Bad Channel'])
    expect(channel.code).toBe(2)
    expect(channel.stderr).toMatch(/"Bad Channel" is not a channel name: \S/)
    // install, update and run check what they are given before the config too (README: exit 2 is
    // "checked before the config is read"): a typo is not reported as a missing config file.
    for (const args of [
      ['install', 'App@1.0.0'],
      ['update', 'App'],
      ['run', 'App', '--', 'node', 'x.js'],
    ]) {
      const refused = await runWithConfig(noConfig, args)
      expect(refused.code, args.join(' ')).toBe(2)
      expect(refused.stderr).toContain('"App" is not an artifact name: lowercase letters')
    }
    for (const args of [
      ['install', 'app@Not A'],
      ['update', 'app', '--to', '1.2.3.4'],
      // Neither a version nor a channel name: refused here, not sent to the edge as a channel ("app has
      // no channel", exit 6, as if the artifact lacked one).
      ['install', 'app@1.0'],
      ['update', 'app', '--to', 'Stable'],
      ['update', 'app@2'],
    ]) {
      const refused = await runWithConfig(noConfig, args)
      expect(refused.code, args.join(' ')).toBe(2)
      expect(refused.stderr).toMatch(/is not a version or channel/)
    }
  })

  it('a maintainer command without DELTAPORT_TOKEN names the token it needs, whatever the command', async () => {
    // It said "… to publish" for rollout status, yank, resign and root publish too.
    for (const args of [
      ['rollout', 'status', 'app'],
      ['yank', 'app@1.0.0', '--reason', 'x'],
    ]) {
      const missing = await cli(['--json', ...args], { DELTAPORT_TOKEN: '' })
      expect(missing.code, args.join(' ')).toBe(3)
      const { message } = (JSON.parse(missing.stdout) as { error: { message: string } }).error
      expect(message).toContain("DELTAPORT_TOKEN to the edge's PUBLISH_TOKEN")
      expect(message).not.toContain('to publish')
    }
  })

  it('rollout start --help shows its defaults as an operator writes them, the edge-side ones included', async () => {
    const help = await cli(['rollout', 'start', '--help'])
    expect(help.code).toBe(0)
    const text = help.stdout.replace(/\s+/g, ' ')
    expect(text).toContain('(default: 1h)')
    expect(text).toContain('(default: 1,10,50,100)')
    expect(text).not.toContain('3600000')
    expect(text).toContain(`default ${DEFAULT_MAX_FAILURE_RATE * 100}%`)
    expect(text).toContain(`default ${DEFAULT_MIN_SAMPLE})`)
  })

  it('a command group named without its command is a usage error that says so, not "(outputHelp)"', async () => {
    const json = await cli(['--json', 'devices'])
    expect(json.code).toBe(2)
    const error = (JSON.parse(json.stdout) as { error: { code: string; message: string } }).error
    expect(error.code).toBe('usage')
    expect(error.message).toMatch(/no command given.*--help/)
    // It names the group's own help, not another group's.
    expect(error.message).toContain('(deltaport devices --help)')
    const rollout = await cli(['--json', 'rollout'])
    const rolloutError = (JSON.parse(rollout.stdout) as { error: { message: string } }).error
    expect(rolloutError.message).toContain('(deltaport rollout --help)')
    const code = await cli(['--json', 'devices', 'code'])
    expect((JSON.parse(code.stdout) as { error: { message: string } }).error.message).toContain(
      '(deltaport devices code --help)',
    )
    const text = await cli([])
    expect(text.code).toBe(2)
    expect(text.stderr).toMatch(/^Usage: deltaport/)
    expect(text.stderr).not.toContain('(outputHelp)')
  })

  it('a usage error the parser finds is, under --json, one JSON line on stdout and nothing on stderr', async () => {
    // README: --json prints exactly one JSON document per command on stdout, errors included. Commander
    // also wrote its message and the command's help to stderr, so a script capturing both streams
    // (2>&1) got prose around the document it parses.
    for (const args of [
      ['--json', 'install', 'x', '--bogus'],
      ['--json', 'status'],
      ['--json', 'devices'],
      ['--json', 'install', 'x', '--wait', 'soon'],
    ]) {
      const refused = await cli(args)
      expect(refused.code, args.join(' ')).toBe(2)
      expect(refused.stderr, args.join(' ')).toBe('')
      const lines = refused.stdout.split('\n').filter((line) => line !== '')
      expect(lines, args.join(' ')).toHaveLength(1)
      expect(JSON.parse(lines[0] ?? '')).toMatchObject({ ok: false, error: { code: 'usage' } })
    }
    // Without --json the message and the help still go to stderr, once.
    const text = await cli(['install', 'x', '--bogus'])
    expect(text.code).toBe(2)
    expect(text.stdout).toBe('')
    expect(text.stderr.match(/unknown option '--bogus'/g)).toHaveLength(1)
    expect(text.stderr).toContain('Usage: deltaport install')
  })

  it("keygen's text output fits the edge's index key as well as a maintainer's (README: deploy)", async () => {
    // The README has operators make the edge's INDEX_SIGNING_KEY with keygen and pin "the indexKeys entry
    // it prints"; printing only a trustedKeys entry invited pasting the edge's key where it signs releases.
    const out = join(ws.dir, 'edge-index.key.json')
    const result = await cli(['keygen', '--out', out])
    expect(result.code).toBe(0)
    const pair = JSON.parse(await readFile(out, 'utf8')) as { keyid: string; publicKey: string }
    const entry = /^public key entry: (.+)$/m.exec(result.stdout)?.[1]
    expect(JSON.parse(entry ?? 'null')).toEqual({ keyid: pair.keyid, publicKey: pair.publicKey })
    expect(result.stdout).toMatch(/"indexKeys"/)
    expect(result.stdout).toMatch(/INDEX_SIGNING_KEY/)
    expect(result.stdout).toMatch(/"trustedKeys"/)
  })

  it('publishes a > 10 MiB artifact through multipart and installs it', async () => {
    const art = await writeArtifact(ws.dir, 'large.bin', 10 * 1024 * 1024 + 4321)
    const published = await cli([
      '--json',
      'publish',
      art.path,
      '--name',
      'large',
      '--version',
      '1.0.0',
      '--deps',
      'libfoo@^1.2.0',
    ])
    expect(published.code).toBe(0)
    expect(JSON.parse(published.stdout)).toMatchObject({
      ok: true,
      published: { name: 'large', size: art.bytes.length },
    })

    // Its dependency is installed with it, first.
    const lib = await writeArtifact(ws.dir, 'libfoo.bin', 1000)
    // A channel named twice is signed once.
    const libArgs = ['--name', 'libfoo', '--version', '1.2.3', '--channel', 'stable', '--channel', 'stable']
    expect((await cli(['publish', lib.path, ...libArgs])).code).toBe(0)
    const served = await fetch(`${ws.config.edgeUrl}/v1/artifacts/libfoo/1.2.3/manifest`)
    expect(await served.json()).toMatchObject({ signed: { channels: ['stable'] } })
    const installed = await cli(['--json', 'install', 'large@stable'])
    expect(installed.code).toBe(0)
    expect(JSON.parse(installed.stdout).install).toMatchObject({
      version: '1.0.0',
      method: 'full',
      dependencies: [{ name: 'libfoo', version: '1.2.3', changed: true }],
    })
    const status = JSON.parse((await cli(['--json', 'status', 'large'])).stdout).status
    expect(status.dependencies).toEqual([
      { name: 'libfoo', range: '^1.2.0', current: '1.2.3', satisfied: true },
    ])
    expectSameBytes(await readFile(join(status.currentPath, 'blob')), art.bytes)
    const manifest = JSON.parse(await readFile(join(status.currentPath, 'manifest.json'), 'utf8'))
    expect(manifest.signed.dependencies).toEqual([{ name: 'libfoo', range: '^1.2.0' }])
  })

  it('maps failures to typed errors and exit codes', async () => {
    const missing = await cli(['--json', 'install', 'nosuchthing'])
    expect(missing.code).toBe(6)
    expect(JSON.parse(missing.stdout)).toMatchObject({ ok: false, error: { code: 'not-found' } })

    const art = await writeArtifact(ws.dir, 'x.bin', 10)
    const unauthorised = await cli(['--json', 'publish', art.path, '--name', 'x', '--version', '1.0.0'], {
      DELTAPORT_TOKEN: 'wrong',
    })
    expect(unauthorised.code).toBe(5)
    expect(JSON.parse(unauthorised.stdout).error.message).toContain('401')

    expect((await cli(['publish', art.path, '--name', 'Bad Name', '--version', '1.0.0'])).code).toBe(2)
    // What devices would refuse is refused before anything is signed: a channel outside the grammar,
    // a dependency range that is not semver (the version would be burned), an empty list item.
    for (const bad of [
      ['--channel', 'Bad'],
      ['--channel', '../x'],
      ['--deps', 'a@notarange'],
      ['--deps', 'x'],
      ['--deps', 'a@^1,,b@2'],
    ]) {
      const refused = await cli(['publish', art.path, '--name', 'x', '--version', '9.0.0', ...bad])
      expect(refused.code, bad.join(' ')).toBe(2)
      expect(refused.stderr, bad.join(' ')).toMatch(/bad (channel|dependency)/)
    }
    // A key file whose keyid is not its key's would sign what no device can match to the key.
    const mislabelled = join(ws.dir, 'mislabelled.key.json')
    await writeFile(mislabelled, JSON.stringify({ ...ws.key, keyid: 'b'.repeat(64) }))
    const misSigned = await cli([
      'publish',
      art.path,
      '--name',
      'x',
      '--version',
      '9.0.0',
      '--key',
      mislabelled,
    ])
    expect(misSigned.code).toBe(3)
    expect(misSigned.stderr).toContain(`${mislabelled}: its keyid is not the sha256 of its public key`)
    expect((await cli(['install', '../../etc'])).code).toBe(2)
    // A channel named like an Object.prototype member is just a channel that does not exist.
    const chan = await writeArtifact(ws.dir, 'chan.bin', 10)
    expect((await cli(['publish', chan.path, '--name', 'chan', '--version', '1.0.0'])).code).toBe(0)
    const inherited = await cli(['--json', 'install', 'chan@constructor'])
    expect(inherited.code).toBe(6)
    expect(JSON.parse(inherited.stdout).error.message).toBe('chan has no channel "constructor"')
    // Installed once, never updated: nothing to roll back to is not-found (exit 6), like an artifact
    // never installed, and not install-failed (exit 9): no install was tried.
    const noPrevious = await cli(['--json', 'rollback', 'large'])
    expect(noPrevious.code).toBe(6)
    expect(JSON.parse(noPrevious.stdout).error).toMatchObject({
      code: 'not-found',
      message:
        'large has no previous version to roll back to (1.0.0 is current, and no version before it is kept)',
      current: '1.0.0',
    })
    // A usage error found inside a command (not by the parser) is shown too; a parser's just once.
    const stages = await cli([
      'rollout',
      'start',
      'x',
      '--version',
      '1.0.0',
      '--stages',
      '1,10,50',
      '--stage-duration',
      '1h,1h',
    ])
    expect(stages.code).toBe(2)
    expect(stages.stderr).toContain('--stage-duration needs one duration or 3 (one per stage), got 2')
    const parsed = await cli(['install', 'x', '--wait', 'soon'])
    expect(parsed.code).toBe(2)
    expect(parsed.stderr.match(/a whole number of seconds/g)).toHaveLength(1)

    const badConfig = join(ws.dir, 'bad.json')
    await writeFile(badConfig, JSON.stringify({ edgeUrl: 'ftp://nope' }))
    const config = await runWithConfig(badConfig, ['status', 'x'])
    expect(config.code).toBe(3)
    expect(config.stderr).toContain('edgeUrl: an http:// or https:// URL')
    // A misspelt knob is not silently the default: the key and the file are named.
    const typo = join(ws.dir, 'typo.json')
    await writeFile(typo, JSON.stringify({ ...ws.config, bandwithCapBps: 1000 }))
    const typoed = await runWithConfig(typo, ['status', 'x'])
    expect(typoed.code).toBe(3)
    expect(typoed.stderr).toContain(`${typo} is invalid: (root): unknown key "bandwithCapBps"`)
    // A channel no edge accepts fails here, not as a 400 at every poll of the daemon.
    const badChannel = join(ws.dir, 'channel.json')
    await writeFile(badChannel, JSON.stringify({ ...ws.config, channel: 'Stable ' }))
    const channelled = await runWithConfig(badChannel, ['status', 'x'])
    expect(channelled.code).toBe(3)
    expect(channelled.stderr).toContain(
      `${badChannel} is invalid: channel: 1-32 of a-z, 0-9 and -, starting with a letter (e.g. stable)`,
    )
    // A small-order trusted key (the identity point) would verify forged signatures: refused by name.
    const weak = join(ws.dir, 'weak.json')
    const identity = { keyid: 'a'.repeat(64), publicKey: `AQ${'A'.repeat(41)}=` }
    await writeFile(weak, JSON.stringify({ ...ws.config, trustedKeys: [identity] }))
    const weakened = await runWithConfig(weak, ['status', 'x'])
    expect(weakened.code).toBe(3)
    expect(weakened.stderr).toContain('trustedKeys.0.publicKey: public key is a small-order Ed25519 point')
    const absentConfig = await runWithConfig(join(ws.dir, 'absent.json'), ['status', 'x'])
    expect(absentConfig.code).toBe(3)
    expect(absentConfig.stderr).toContain('(create one: see README "Agent config")')
    // A config path that exists but cannot be read is not "missing": the system's reason, no hint.
    const dirConfig = await runWithConfig(ws.dir, ['status', 'x'])
    expect(dirConfig.code).toBe(3)
    expect(dirConfig.stderr).toContain(`cannot read config file ${ws.dir}: illegal operation on a directory`)

    const offline = await makeWorkspace('http://127.0.0.1:9')
    expect((await runWithConfig(offline.configFile, ['install', 'x'])).code).toBe(4)
    // A target that starts like a version but is none is the user's typo, told before any request
    // (not "cannot reach the edge", nor the edge's 400 as exit 5).
    for (const args of [
      ['install', 'x@1.2.3.4'],
      ['install', 'x@1.0.0+build'],
      ['update', 'x', '--to', '01.2.3'],
    ]) {
      const typo = await runWithConfig(offline.configFile, args)
      expect(typo.code, args.join(' ')).toBe(2)
      expect(typo.stderr, args.join(' ')).toContain('is not a version')
    }
    // A target given twice is not silently the --to one (it used to update to 2.0.0 here).
    const twice = await runWithConfig(offline.configFile, ['--json', 'update', 'x@1.0.0', '--to', '2.0.0'])
    expect(twice.code).toBe(2)
    expect(JSON.parse(twice.stdout).error).toMatchObject({
      code: 'usage',
      message:
        '"x@1.0.0" names a target and --to names 2.0.0: give the target once (x@<target> or --to <target>)',
    })
  })

  it('waits for, or with --wait 0 refuses, an artifact another process is changing (exit 11)', async () => {
    const art = await writeArtifact(ws.dir, 'held.bin', 1000)
    expect((await cli(['publish', art.path, '--name', 'held', '--version', '1.0.0'])).code).toBe(0)
    const lock = await lockArtifact(new ArtifactStore(ws.config.installRoot, 'held').dir, { timeoutMs: 0 })
    const refused = await cli(['--json', 'update', 'held', '--wait', '0'])
    expect(refused.code).toBe(11)
    expect(JSON.parse(refused.stdout).error).toMatchObject({ code: 'busy', pid: process.pid })
    expect((await cli(['rollback', 'held', '--wait', '0'])).code).toBe(11)
    expect((await cli(['install', 'held', '--wait', 'soon'])).code).toBe(2)
    // Released only once the CLI says it waits for the lock (not after a fixed sleep a loaded machine
    // may overrun, which let the CLI find the lock already free).
    const waiting = startCli(['install', 'held', '--wait', '60'])
    try {
      await waiting.untilStderr(`waiting for pid ${process.pid}`, 45_000)
    } finally {
      await lock.release()
    }
    const installed = await waiting.done
    expect(installed.code).toBe(0)
    expect(installed.stderr).toContain(`waiting for pid ${process.pid}`)
    expect(installed.stdout).toContain('held@1.0.0: full')
  })

  it('an install refused as a rollback names the flag that installs an older release on purpose', async () => {
    for (const [file, version] of [
      ['down-1.bin', '1.0.0'],
      ['down-2.bin', '2.0.0'],
    ] as const) {
      const art = await writeArtifact(ws.dir, file, 1000)
      expect((await cli(['publish', art.path, '--name', 'down', '--version', version])).code).toBe(0)
    }
    expect((await cli(['install', 'down@2.0.0'])).code).toBe(0)
    const refused = await cli(['install', 'down@1.0.0'])
    expect(refused.code).not.toBe(0)
    expect(refused.stderr).toContain('rollback refused')
    expect(refused.stderr).toContain('`deltaport install down@1.0.0 --allow-downgrade`')
    expect((await cli(['install', 'down@1.0.0', '--allow-downgrade'])).code).toBe(0)
  })

  it('a config maintainerThreshold above the signatures a manifest carries is refused, not a device that installs nothing', async () => {
    const keys = await Promise.all(Array.from({ length: 9 }, () => generateKeyPair()))
    const file = join(ws.dir, 'nine-of-nine.json')
    const trustedKeys = keys.map(({ keyid, publicKey }) => ({ keyid, publicKey }))
    await writeFile(file, JSON.stringify({ ...ws.config, trustedKeys, maintainerThreshold: 9 }))
    const result = await runWithConfig(file, ['status', 'anything'])
    expect(result.code).toBe(3)
    expect(result.stderr).toContain(
      'maintainerThreshold: at most 8, the most signatures a signed manifest carries',
    )
  })

  it('yank says when it leaves a channel with no head, which the heads line cannot show', async () => {
    const art = await writeArtifact(ws.dir, 'sole.bin', 1000)
    expect((await cli(['publish', art.path, '--name', 'sole', '--version', '1.0.0'])).code).toBe(0)
    const yanked = await cli(['yank', 'sole@1.0.0', '--reason', 'wrong build'])
    expect(yanked.code).toBe(0)
    expect(yanked.stdout).toContain('channels: none')
    expect(yanked.stderr).toContain('warning: channel stable has no head now (every version of it is yanked)')
    const restored = await cli(['yank', 'sole@1.0.0', '--undo'])
    expect(restored.stdout).toContain('channels: stable → 1.0.0')
    expect(restored.stderr).not.toContain('no head')
  })

  it('reports missing and unwritable files as io errors naming the path, not as bugs', async () => {
    const absent = join(ws.dir, 'no-such-file.bin')
    const art = await writeArtifact(ws.dir, 'io.bin', 1000)
    for (const args of [
      ['delta', 'apply', absent, art.path, join(ws.dir, 'out.bin')],
      ['delta', 'make', art.path, absent, join(ws.dir, 'out.delta')],
      ['publish', absent, '--name', 'io', '--version', '1.0.0'],
    ]) {
      const result = await cli(['--json', ...args])
      expect(result.code).toBe(10)
      expect(JSON.parse(result.stdout)).toMatchObject({
        ok: false,
        error: { code: 'io', errno: 'ENOENT', path: absent },
      })
    }
    // An output directory that does not exist is named as the user gave it, not by a temp file's name.
    const nowhere = join(ws.dir, 'no-such-dir', 'out.delta')
    const unwritable = await cli(['delta', 'make', art.path, art.path, nowhere])
    expect(unwritable.code).toBe(10)
    expect(unwritable.stderr).toContain(`cannot open ${nowhere}: no such file or directory`)
    expect(unwritable.stderr).not.toContain('unexpected failure')

    // Directories where files belong: as an input, as the delta, and as the output.
    for (const [args, named] of [
      [['delta', 'make', ws.dir, art.path, join(ws.dir, 'd.out')], `${ws.dir} is not a regular file`],
      [['delta', 'apply', art.path, ws.dir, join(ws.dir, 'd.out')], `${ws.dir} is not a regular file`],
      [['delta', 'make', art.path, art.path, ws.dir], `${ws.dir} is a directory`],
      [['publish', ws.dir, '--name', 'io', '--version', '1.0.0'], `${ws.dir} is not a regular file`],
    ] as const) {
      const result = await cli([...args])
      expect(result.code).toBe(10)
      expect(result.stderr).toContain(named)
    }

    // A store root that is a file is not an empty store: status says why it cannot look.
    const fileRootConfig = join(ws.dir, 'file-root.json')
    await writeFile(fileRootConfig, JSON.stringify({ ...ws.config, installRoot: art.path }))
    const status = await runWithConfig(fileRootConfig, ['status', 'io'])
    expect(status.code).toBe(10)
    expect(status.stderr).toContain(`cannot readlink ${join(art.path, 'io', 'current')}: not a directory`)
  })

  it('delta apply refuses an archive rebuild bigger than the memory it may use, before writing', async () => {
    // Two gzip members whose contents (≈640 KB of text) differ by a line: an archive-aware delta.
    const text = Array.from({ length: 40_000 }, (_, i) => `line ${i} ${(i * 7919) % 10007}\n`).join('')
    const source = join(ws.dir, 'mem-src.gz')
    const target = join(ws.dir, 'mem-tgt.gz')
    await writeFile(source, gzipSync(text, { level: 9 }))
    await writeFile(target, gzipSync(text.replace('line 20000 ', 'line 20000 changed '), { level: 9 }))
    const deltaPath = join(ws.dir, 'mem.delta')
    const made = await cli(['--json', 'delta', 'make', '--method', 'archive', source, target, deltaPath])
    expect(JSON.parse(made.stdout).delta.method).toBe('archive')
    const out = join(ws.dir, 'mem-out.gz')
    // 33 MiB leaves 1 MiB above the fixed cost: room for ≈170 KB of expanded content, not 640 KB.
    const refused = await cli(['delta', 'apply', '--max-memory', '33', source, deltaPath, out])
    // Exit 17, as for memory the machine would not give a window: one code for "not the memory here".
    expect(refused.code).toBe(17)
    expect(refused.stderr).toContain(
      'not enough memory to rebuild this archive here: 33.0 MiB allowed (--max-memory), and an archive apply needs 32.0 MiB plus 6 bytes per byte of expanded archive and 256 per table entry of the delta and 1 per byte of it, which leaves room for 170.7 KiB of archive',
    )
    // Below the fixed cost there is no room at all: said in MiB, not as "a limit of 0".
    const tiny = await cli(['delta', 'apply', '--max-memory', '1', source, deltaPath, out])
    expect(tiny.code).toBe(17)
    expect(tiny.stderr).toContain('1.0 MiB allowed (--max-memory)')
    expect(tiny.stderr).toContain('leaves room for 0 B of archive')
    await expect(readFile(out)).rejects.toThrow()
    expect((await cli(['delta', 'apply', '--max-memory', '64', source, deltaPath, out])).code).toBe(0)
    expectSameBytes(await readFile(out), await readFile(target))
    expect((await cli(['delta', 'apply', '--max-memory', 'lots', source, deltaPath, out])).code).toBe(2)
  })

  it('delta make/apply refuse an output that is one of their inputs (exit 2), leaving it intact', async () => {
    const a = await writeArtifact(ws.dir, 'same-a.bin', 5_000)
    const b = await writeArtifact(ws.dir, 'same-b.bin', 5_000)
    const d = join(ws.dir, 'same.delta')
    expect((await cli(['delta', 'make', a.path, b.path, d])).code).toBe(0)
    const deltaBytes = await readFile(d)
    for (const args of [
      ['apply', a.path, d, a.path],
      ['apply', a.path, d, d],
      ['make', a.path, b.path, b.path],
      // Another spelling of the same file.
      ['apply', a.path, d, join(ws.dir, '.', 'same-a.bin')],
    ]) {
      const refused = await cli(['delta', ...args])
      expect(refused.code, args.join(' ')).toBe(2)
      expect(refused.stderr).toMatch(/the output .* is the (source|delta|target)/)
    }
    expectSameBytes(await readFile(a.path), a.bytes)
    expectSameBytes(await readFile(b.path), b.bytes)
    expectSameBytes(await readFile(d), deltaBytes)
  })

  it('status reports what the current link says when state.json disagrees, and flags it', async () => {
    const art = await writeArtifact(ws.dir, 'drift.bin', 1_000)
    expect((await cli(['publish', art.path, '--name', 'drift', '--version', '1.0.0'])).code).toBe(0)
    expect((await cli(['install', 'drift'])).code).toBe(0)
    const store = new ArtifactStore(ws.config.installRoot, 'drift')
    // state.json edited (or a switch killed half-way) to name a version the link does not.
    const state = JSON.parse(await readFile(join(store.dir, 'state.json'), 'utf8'))
    await writeFile(join(store.dir, 'state.json'), JSON.stringify({ ...state, current: '0.9.0' }))
    const status = await cli(['--json', 'status', 'drift'])
    expect(JSON.parse(status.stdout).status).toMatchObject({
      current: '1.0.0',
      stateDisagrees: expect.stringContaining('state.json names 0.9.0 as current, but'),
    })
    // The link removed: nothing runs, whatever state.json says.
    await writeFile(join(store.dir, 'state.json'), JSON.stringify(state))
    await rm(store.currentLink)
    const gone = await cli(['status', 'drift'])
    expect(gone.stdout).toContain('drift: current none')
    expect(gone.stderr).toContain(
      `warning: state.json names 1.0.0 as current, but ${store.currentLink} points at nothing`,
    )
  })

  it('delta make/apply round-trips files and leaves no output for a corrupt delta', async () => {
    const source = await writeArtifact(ws.dir, 'delta-src.bin', 200_000)
    const target = join(ws.dir, 'delta-tgt.bin')
    await writeFile(
      target,
      Buffer.concat([
        source.bytes.subarray(0, 90_000),
        Buffer.from('inserted'),
        source.bytes.subarray(90_000),
      ]),
    )
    const deltaPath = join(ws.dir, 'd.delta')
    const made = await cli(['--json', 'delta', 'make', source.path, target, deltaPath])
    expect(made.code).toBe(0)
    expect(JSON.parse(made.stdout).delta.size).toBeLessThan(1000)
    const out = join(ws.dir, 'rebuilt.bin')
    expect((await cli(['delta', 'apply', source.path, deltaPath, out])).code).toBe(0)
    expectSameBytes(await readFile(out), await readFile(target))

    // The streaming form (automatic for files over 1 GiB) makes an ordinary delta the same apply reads.
    const streamedPath = join(ws.dir, 'streamed.delta')
    const streamed = await cli([
      '--json',
      'delta',
      'make',
      '--stream',
      '--source-window',
      '1',
      source.path,
      target,
      streamedPath,
    ])
    expect(streamed.code).toBe(0)
    expect(JSON.parse(streamed.stdout).delta).toMatchObject({ method: 'vcdiff', streamed: true })
    const rebuiltStreamed = join(ws.dir, 'rebuilt-streamed.bin')
    expect((await cli(['delta', 'apply', source.path, streamedPath, rebuiltStreamed])).code).toBe(0)
    expectSameBytes(await readFile(rebuiltStreamed), await readFile(target))
    const archiveStreamed = await cli([
      'delta',
      'make',
      '--stream',
      '--method',
      'archive',
      source.path,
      target,
      streamedPath,
    ])
    expect(archiveStreamed.code).toBe(2)
    expect(archiveStreamed.stderr).toContain('streaming makes vcdiff or approx')
    // Methods before the positionals, comma-separated or repeated; an unknown one is a usage error.
    for (const methods of [
      ['--method', 'vcdiff,approx'],
      ['--method', 'approx', '--method', 'vcdiff'],
    ]) {
      const restricted = await cli(['--json', 'delta', 'make', ...methods, source.path, target, streamedPath])
      expect(restricted.code).toBe(0)
      const tried = JSON.parse(restricted.stdout).delta.candidates.map((c: { method: string }) => c.method)
      expect(tried.sort()).toEqual(['approx', 'vcdiff'])
    }
    expect((await cli(['delta', 'make', '--method', 'bsdiff', source.path, target, streamedPath])).code).toBe(
      2,
    )
    expect(
      (await cli(['delta', 'make', '--source-window', '0', source.path, target, streamedPath])).code,
    ).toBe(2)

    const corrupt = await readFile(deltaPath)
    corrupt[corrupt.length - 3]! ^= 0xff
    await writeFile(deltaPath, corrupt)
    const bad = join(ws.dir, 'never.bin')
    const applied = await cli(['--json', 'delta', 'apply', source.path, deltaPath, bad])
    expect(applied.code).toBe(8)
    await expect(readFile(bad)).rejects.toThrow()
  })
})
