import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { constants } from 'node:fs'
import { access, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { cliFailure, expectSameBytes } from './fixtures.ts'
import { type LocalEdge, startLocalEdge, TEST_TOKEN } from './local-edge.ts'

/**
 * The agent as a device gets it: built by scripts/build-agent.ts, packed by npm, installed globally from
 * the tarball with the registry switched off, then run from the install prefix (outside this repo, where
 * nothing could be resolved from the repo's node_modules) against the real local edge.
 */

const exec = promisify(execFile)
const ROOT = join(import.meta.dirname, '..', '..')
// The repo's Node 22 first: the installed bin starts with `#!/usr/bin/env node`.
const PATH = [join(ROOT, 'node_modules', '.bin'), process.env.PATH ?? ''].join(delimiter)
const ROOT_VERSION = z
  .object({ version: z.string() })
  .parse(JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8'))).version

const PackResult = z
  .array(z.object({ filename: z.string(), files: z.array(z.object({ path: z.string() })) }))
  .length(1)

let tmp: string
let bin: string
let packageDir: string
let packedFiles: string[]
let edge: LocalEdge

async function sh(file: string, args: string[], cwd = tmp) {
  // A clean npm environment: no npm_config_* inherited from an `npm test` parent (prefix, cache…).
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)))
  return exec(file, args, { cwd, env: { ...env, PATH }, maxBuffer: 16 * 1024 * 1024 })
}

async function deltaport(args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await exec(bin, args, {
      cwd: tmp,
      env: { ...process.env, PATH, ...env },
      maxBuffer: 16 * 1024 * 1024,
    })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'deltaport-pack-'))
  const outDir = join(tmp, 'agent')
  await sh(process.execPath, [join(ROOT, 'scripts', 'build-agent.ts'), '--out', outDir], ROOT)
  const packed = PackResult.parse(
    JSON.parse((await sh('npm', ['pack', outDir, '--json', '--pack-destination', tmp])).stdout),
  )[0]!
  packedFiles = packed.files.map((f) => f.path).sort()
  const prefix = join(tmp, 'prefix')
  await sh('npm', [
    'install',
    '--global',
    '--prefix',
    prefix,
    '--offline',
    '--cache',
    join(tmp, 'npm-cache'),
    '--no-audit',
    '--no-fund',
    join(tmp, packed.filename),
  ])
  bin = join(prefix, 'bin', 'deltaport')
  packageDir = join(prefix, 'lib', 'node_modules', 'deltaport-agent')
  edge = await startLocalEdge()
}, 90_000)

afterAll(async () => {
  await edge?.dispose()
  if (tmp) await rm(tmp, { recursive: true, force: true })
})

describe('the packaged agent', () => {
  it('packs the built agent, its units and notices, and no sources', () => {
    expect(packedFiles).toEqual([
      'README.md',
      'THIRD_PARTY_LICENSES.md',
      'apply-worker.mjs',
      'deltaport.mjs',
      'make-worker.mjs',
      'package.json',
      'systemd/deltaport-daemon.service',
      'systemd/deltaport-run@.service',
    ])
  })

  it('installs with no registry and no dependencies, and runs from the install prefix', async () => {
    const manifest = JSON.parse(await readFile(join(packageDir, 'package.json'), 'utf8'))
    expect(manifest).toMatchObject({ name: 'deltaport-agent', version: ROOT_VERSION })
    expect(manifest.dependencies).toBeUndefined()
    expect(await readdir(packageDir)).not.toContain('node_modules')

    const version = await deltaport(['--version'])
    expect(version).toMatchObject({ code: 0, stdout: `${ROOT_VERSION}\n` })
    const help = await deltaport(['--help'])
    expect(help.code).toBe(0)
    for (const command of ['install', 'update', 'rollback', 'daemon', 'run', 'publish', 'keygen']) {
      expect(help.stdout).toMatch(new RegExp(`^\\s+${command}\\b`, 'm'))
    }
    // Bundled licenses of every bundled runtime dependency.
    const notices = await readFile(join(packageDir, 'THIRD_PARTY_LICENSES.md'), 'utf8')
    for (const dep of ['commander', 'zod', 'semver', 'fflate', 'pako'])
      expect(notices).toContain(`## ${dep} `)
  })

  it('prints the same version from source, where publish --version stays a publish option', async () => {
    const source = join(ROOT, 'client-agent', 'bin', 'deltaport.ts')
    expect((await exec(process.execPath, [source, '-V'])).stdout).toBe(`${ROOT_VERSION}\n`)
    // Not the program's version flag: publish runs and fails on its missing config (exit 3).
    const publish = await cliFailure(
      exec(process.execPath, [
        source,
        '--config',
        join(tmp, 'missing.json'),
        'publish',
        join(tmp, 'x.bin'),
        '--name',
        'app',
        '--version',
        '1.0.0',
      ]),
    )
    expect(publish?.code).toBe(3)
    expect(publish?.stdout).not.toContain(ROOT_VERSION)
  })

  it('publishes, installs and updates by delta against the real edge', async () => {
    const keyFile = join(tmp, 'maintainer.key.json')
    const keygen = await deltaport(['--json', 'keygen', '--out', keyFile])
    expect(keygen.code).toBe(0)
    const { keyid, publicKey } = JSON.parse(keygen.stdout) as { keyid: string; publicKey: string }
    const configFile = join(tmp, 'deltaport.json')
    await writeFile(
      configFile,
      JSON.stringify({
        edgeUrl: edge.url,
        trustedKeys: [{ keyid, publicKey }],
        installRoot: join(tmp, 'store'),
        signingKey: keyFile,
      }),
    )
    const v1 = randomBytes(256 * 1024)
    const v2 = Buffer.concat([v1.subarray(0, 100_000), randomBytes(2000), v1.subarray(100_000)])
    await writeFile(join(tmp, 'v1.bin'), v1)
    await writeFile(join(tmp, 'v2.bin'), v2)
    const withConfig = (args: string[]) =>
      deltaport(['--json', '--config', configFile, ...args], { DELTAPORT_TOKEN: TEST_TOKEN })

    for (const [file, version] of [
      ['v1.bin', '1.0.0'],
      ['v2.bin', '1.1.0'],
    ] as const) {
      const published = await withConfig(['publish', join(tmp, file), '--name', 'app', '--version', version])
      expect(published.code, published.stdout + published.stderr).toBe(0)
    }
    expect((await withConfig(['install', 'app@1.0.0'])).code).toBe(0)
    const updated = await withConfig(['update', 'app'])
    expect(updated.code, updated.stdout).toBe(0)
    expect(JSON.parse(updated.stdout).install).toMatchObject({ version: '1.1.0', method: 'delta' })
    const status = JSON.parse((await withConfig(['status', 'app'])).stdout).status
    expectSameBytes(await readFile(join(status.currentPath, 'blob')), v2)
  })

  it('on a Node older than engines (22.12) says what it needs, exit 3, rather than a SyntaxError', async () => {
    const agent = join(packageDir, 'deltaport.mjs')
    // Node 20 as far as the bundle can tell (the preload runs before the bundle is loaded).
    const older = `data:text/javascript,Object.defineProperty(process, 'versions', { value: { ...process.versions, node: '22.11.0' } })`
    const faked = await cliFailure(exec(process.execPath, ['--import', older, agent, '--version']))
    expect(faked?.code).toBe(3)
    expect(faked?.stderr).toBe(
      `deltaport: needs Node.js 22.12 or newer; this is 22.11.0 (${process.execPath})\n`,
    )
    // A real older Node, where the machine has one (Debian's nodejs is 20 or 18): the bundle must load
    // there far enough to say so; a named import of an export only Node 22 has failed it before that.
    for (const node of await everyOnPath('node')) {
      const { stdout } = await exec(node, ['-p', 'process.versions.node'])
      const [major = 0, minor = 0] = stdout.trim().split('.').map(Number)
      if (major > 22 || (major === 22 && minor >= 12) || major < 18) continue
      const real = await cliFailure(exec(node, [agent, '--version']))
      expect(real?.code, node).toBe(3)
      expect(real?.stderr, node).toContain(
        `deltaport: needs Node.js 22.12 or newer; this is ${stdout.trim()}`,
      )
    }
  })

  // systemd-analyze (Debian's systemd package) checks syntax, keys and that ExecStart is executable;
  // where it is missing (a container without systemd) only the unit contents are checked.
  it('ships systemd units that systemd-analyze accepts when pointed at the installed bin', async () => {
    const units = await readdir(join(packageDir, 'systemd'))
    expect(units.sort()).toEqual(['deltaport-daemon.service', 'deltaport-run@.service'])
    const analyze = await which('systemd-analyze')
    for (const unit of units) {
      const text = await readFile(join(packageDir, 'systemd', unit), 'utf8')
      expect(text).toContain('ExecStart=/usr/local/bin/deltaport --config /etc/deltaport/deltaport.json')
      if (!analyze) continue
      // An instance name for the template; the installed bin instead of /usr/local/bin/deltaport.
      const path = join(tmp, unit.replace('@.service', '@demo.service'))
      await writeFile(path, text.replaceAll('/usr/local/bin/deltaport', bin))
      const verified = await sh(analyze, ['verify', path])
      expect(verified.stderr).toBe('')
    }
  })
})

/** Every executable `command` on PATH (the repo's Node first), each once. */
async function everyOnPath(command: string): Promise<string[]> {
  const found: string[] = []
  for (const dir of PATH.split(delimiter)) {
    const candidate = join(dir, command)
    if (found.includes(candidate)) continue
    if (
      await access(candidate, constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      found.push(candidate)
  }
  return found
}

async function which(command: string): Promise<string | null> {
  for (const dir of PATH.split(delimiter)) {
    const candidate = join(dir, command)
    if (
      await access(candidate, constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      return candidate
  }
  return null
}
