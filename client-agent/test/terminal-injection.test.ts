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

/** `deltaport install <name>` through an edge whose answer for it is a 404 problem detailed HOSTILE. */
async function installFromInjectingEdge(name: string, extraArgs: string[] = []) {
  proxy = await startFaultProxy(suite.edge.url, (request) =>
    request.path === `/v1/artifacts/${name}`
      ? {
          kind: 'replace-body',
          body: JSON.stringify({ type: 'about:blank', title: 'Not Found', status: 404, detail: HOSTILE }),
        }
      : undefined,
  )
  const config = JSON.parse(await readFile(suite.ws.configFile, 'utf8')) as Record<string, unknown>
  const configFile = join(suite.ws.dir, `${name}.deltaport.json`)
  await writeFile(configFile, JSON.stringify({ ...config, edgeUrl: proxy.url }))
  return run(process.execPath, [BIN, '--config', configFile, ...extraArgs, 'install', name]).then(
    () => null,
    (error: { code: number; stdout: string; stderr: string }) => error,
  )
}

describe('edge text on the terminal', () => {
  it('shows control characters in an edge problem detail as \\xNN, sending none', async () => {
    const failed = await installFromInjectingEdge('inject')
    expect(failed?.code).toBe(6)
    const stderr = failed?.stderr ?? ''
    expect(stderr).toContain(
      '\\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\\x07\\x1b[2J\\x0dpublished OK\\x9b31m',
    )
    const controls = [...stderr].filter((c) => c !== '\n' && c !== '\t' && /\p{Cc}/u.test(c))
    expect(controls).toEqual([])
  })

  it('--json escapes DEL and C1 controls too (JSON.stringify leaves them raw), parsing to the same text', async () => {
    const failed = await installFromInjectingEdge('inject-json', ['--json'])
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
