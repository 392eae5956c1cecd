import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deltaport-config-check-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** Runs the real CLI, `stdin` piped in (or nothing). */
function deltaport(args: string[], stdin = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
    })
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }))
    child.stdin.end(stdin)
  })
}

async function documentFile(name: string, document: unknown): Promise<string> {
  const path = join(dir, name)
  await writeFile(path, typeof document === 'string' ? document : JSON.stringify(document))
  return path
}

const WITH_WARNINGS = {
  regions: { map: { EU: 'Europe West' } },
  zones: {
    zones: [
      { id: 'wnam', capacityBytes: 1e9, bucket: 'ZONE_WNAM' },
      { id: 'weur', capacityBytes: 1e9, bucket: 'ZONE_WEUR' },
      { id: 'apac', capacityBytes: 1e9, bucket: 'ZONE_APAC' },
      { id: 'weur', capacityBytes: 1e9 },
    ],
  },
}

describe('deltaport config check', () => {
  it('prints ok and exits 0 for a document the edge takes as written', async () => {
    const file = await documentFile('good.json', { stream: { fecM: 4 }, regions: { map: { EU: 'europe' } } })
    expect(await deltaport(['config', 'check', file])).toEqual({ code: 0, stdout: 'ok\n', stderr: '' })
    expect(await deltaport(['config', 'check', '-'], '{}')).toMatchObject({ code: 0, stdout: 'ok\n' })
  })

  it('exits 1 with each issue path and message for a document the edge would reject', async () => {
    const file = await documentFile('bad.json', { stream: { fecK: 0 }, yank: { requireStatement: 'yes' } })
    const text = await deltaport(['config', 'check', file])
    expect(text.code).toBe(1)
    expect(text.stderr).toContain('error: stream.fecK: ')
    expect(text.stderr).toContain('error: yank.requireStatement: ')
    expect(text.stdout).toBe('')

    const json = await deltaport(['--json', 'config', 'check', '-'], '{"stream":')
    expect(json.code).toBe(1)
    expect(JSON.parse(json.stdout)).toMatchObject({
      ok: false,
      error: { code: 'check-failed', issues: [{ path: '', message: expect.stringContaining('not JSON') }] },
    })
  })

  it('exits 1 on warnings unless --allow-warnings, printing each with its path', async () => {
    const file = await documentFile('warned.json', WITH_WARNINGS)
    const refused = await deltaport(['config', 'check', file])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain('warning: regions.map.EU: "Europe West" is not a region name')
    expect(refused.stderr).toContain('warning: zones.zones.3.id: zone weur is declared again')
    expect(refused.stdout).toBe('')

    const allowed = await deltaport(
      ['config', 'check', '--allow-warnings', '-'],
      JSON.stringify(WITH_WARNINGS),
    )
    expect(allowed.code).toBe(0)
    expect(allowed.stdout).toBe('ok\n')
    expect(allowed.stderr).toContain('warning: regions.map.EU')

    const json = await deltaport(['--json', 'config', 'check', file])
    expect(json.code).toBe(1)
    expect(JSON.parse(json.stdout).error.warnings.map((w: { path: string }) => w.path)).toEqual([
      'regions.map.EU',
      'zones.zones.3.id',
    ])
  })

  it('names a key written twice in one object', async () => {
    const twice = await deltaport(
      ['config', 'check', '-'],
      '{"devices":{"requireCredential":"reports"},"devices":{}}',
    )
    expect(twice.code).toBe(1)
    expect(twice.stderr).toContain('warning: devices: is written more than once in its object')
  })

  it('a missing file is an io failure, a missing argument a usage one', async () => {
    expect((await deltaport(['config', 'check', join(dir, 'nope.json')])).code).toBe(10)
    expect((await deltaport(['config', 'check'])).code).toBe(2)
  })

  it('an io failure names the path, as the README promises for exit 10', async () => {
    // A folder given as the document: the read stream's EISDIR carries no path of its own.
    const failed = await deltaport(['--json', 'config', 'check', dir])
    expect(failed.code).toBe(10)
    const error = (JSON.parse(failed.stdout) as { error: { code: string; message: string; path?: string } })
      .error
    expect(error).toMatchObject({ code: 'io', path: dir })
    expect(error.message).toContain(dir)
  })
})
