import { execFile } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterEach, describe, expect, it } from 'vitest'
import { printable } from '../output.ts'
import { type FaultProxy, startFaultProxy } from './fault-proxy.ts'
import { useEdgeWorkspace } from './local-edge.ts'

/**
 * What the CLI prints quotes the edge (problem details, error pages), and whoever answers for the edge
 * chooses those bytes: terminal control sequences in them must be shown, never sent to the terminal.
 */

const suite = useEdgeWorkspace()
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
const run = promisify(execFile)

/** OSC 52 (set the clipboard), a screen clear, a CR rewriting the line, a C1 CSI and a BEL. */
const HOSTILE = '\u001b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\u0007\u001b[2J\rpublished OK\u009b31m'

let proxy: FaultProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
})

describe('edge text on the terminal', () => {
  it('shows control characters in an edge problem detail as \\xNN, sending none', async () => {
    proxy = await startFaultProxy(suite.edge.url, (request) =>
      request.path === '/v1/artifacts/inject'
        ? {
            kind: 'replace-body',
            body: JSON.stringify({ type: 'about:blank', title: 'Not Found', status: 404, detail: HOSTILE }),
          }
        : undefined,
    )
    const config = JSON.parse(await readFile(suite.ws.configFile, 'utf8')) as Record<string, unknown>
    const configFile = join(suite.ws.dir, 'inject.deltaport.json')
    await writeFile(configFile, JSON.stringify({ ...config, edgeUrl: proxy.url }))
    const failed = await run(process.execPath, [BIN, '--config', configFile, 'install', 'inject']).then(
      () => null,
      (error: { code: number; stderr: string }) => error,
    )
    expect(failed?.code).toBe(6)
    const stderr = failed?.stderr ?? ''
    expect(stderr).toContain(
      '\\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\\x07\\x1b[2J\\x0dpublished OK\\x9b31m',
    )
    const controls = [...stderr].filter((c) => c !== '\n' && c !== '\t' && /\p{Cc}/u.test(c))
    expect(controls).toEqual([])
  })

  it('--json escapes DEL and C1 controls too (JSON.stringify leaves them raw), parsing to the same text', async () => {
    proxy = await startFaultProxy(suite.edge.url, (request) =>
      request.path === '/v1/artifacts/inject-json'
        ? {
            kind: 'replace-body',
            body: JSON.stringify({ type: 'about:blank', title: 'Not Found', status: 404, detail: HOSTILE }),
          }
        : undefined,
    )
    const config = JSON.parse(await readFile(suite.ws.configFile, 'utf8')) as Record<string, unknown>
    const configFile = join(suite.ws.dir, 'inject-json.deltaport.json')
    await writeFile(configFile, JSON.stringify({ ...config, edgeUrl: proxy.url }))
    const failed = await run(process.execPath, [
      BIN,
      '--config',
      configFile,
      '--json',
      'install',
      'inject-json',
    ]).then(
      () => null,
      (error: { code: number; stdout: string }) => error,
    )
    expect(failed?.code).toBe(6)
    const stdout = failed?.stdout ?? ''
    expect([...stdout].filter((c) => c !== '\n' && /\p{Cc}/u.test(c))).toEqual([])
    expect(stdout).toContain('\\u009b31m')
    const parsed = JSON.parse(stdout) as { ok: boolean; error: { message: string } }
    expect(parsed.ok).toBe(false)
    expect(parsed.error.message).toContain(HOSTILE)
  })

  it('leaves tabs, newlines and other text alone', () => {
    expect(printable('a\tb\nc — ü 🙂')).toBe('a\tb\nc — ü 🙂')
  })
})
