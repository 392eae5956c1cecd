import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { gzipSync } from 'node:zlib'
import { expect } from 'vitest'
import { sourceLikeText } from '../../delta/fuzz-input.ts'
import type { ArtifactManifest } from '../../schemas/manifest.ts'
import type { AgentConfig } from '../config.ts'
import { AgentError } from '../errors.ts'
import { generateKeyPair, type KeyPairFiles } from '../signing.ts'

export interface Workspace {
  dir: string
  keyFile: string
  key: KeyPairFiles
  configFile: string
  config: AgentConfig
}

/** A temp folder with a maintainer key, a device config trusting it, and an empty install root. */
export async function makeWorkspace(edgeUrl: string): Promise<Workspace> {
  const dir = await mkdtemp(join(tmpdir(), 'deltaport-test-'))
  const key = await generateKeyPair()
  const keyFile = join(dir, 'maintainer.key.json')
  await writeFile(keyFile, JSON.stringify(key))
  const config: AgentConfig = {
    edgeUrl,
    trustedKeys: [{ keyid: key.keyid, publicKey: key.publicKey }],
    indexKeys: [],
    installRoot: join(dir, 'store'),
    signingKey: keyFile,
    bandwidthCapBps: 0,
    channel: 'stable',
    keepVersions: 2,
  }
  const configFile = join(dir, 'deltaport.json')
  await writeFile(configFile, JSON.stringify(config))
  return { dir, keyFile, key, configFile, config }
}

export async function writeArtifact(
  dir: string,
  name: string,
  size: number,
): Promise<{ path: string; bytes: Buffer }> {
  const bytes = randomBytes(size)
  const path = join(dir, name)
  await writeFile(path, bytes)
  return { path, bytes }
}

/** Byte equality without vitest's element-by-element diff, which takes seconds on megabytes. */
export function expectSameBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length)
  expect(Buffer.compare(actual, expected)).toBe(0)
}

/** A manifest for a plain artifact valid for a day, as `deltaport publish` fills it; tests name the rest. */
export function manifestFor(
  fields: Pick<ArtifactManifest, 'name' | 'version' | 'size' | 'sha256' | 'serial'>,
): ArtifactManifest {
  return {
    schemaVersion: 1,
    mediaType: 'application/octet-stream',
    dependencies: [],
    channels: ['stable'],
    createdAt: new Date().toISOString(),
    expires: new Date(Date.now() + 86_400_000).toISOString(),
    chunkIndex: null,
    deltas: [],
    ...fields,
  }
}

/**
 * The longest wait between turns of this thread's event loop while `work` runs: what a request the
 * agent proxies during an update would wait at worst.
 */
export async function longestStall(work: () => Promise<unknown>): Promise<number> {
  let last = performance.now()
  let longest = 0
  const timer = setInterval(() => {
    const now = performance.now()
    longest = Math.max(longest, now - last)
    last = now
  }, 2)
  try {
    await work()
  } finally {
    clearInterval(timer)
  }
  return Math.max(longest, performance.now() - last)
}

/**
 * 10 MB of text lines gzipped at level 9, before and after one line is edited: an archive delta whose
 * apply takes the whole source stream apart and re-deflates the target in one synchronous stretch
 * (≈230 ms here). For the tests that time event-loop stalls (ADR 0030).
 */
export function editedTextGzip(): { before: Buffer; after: Buffer } {
  const words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india']
  const lines = Array.from(
    { length: 300_000 },
    (_, i) => `line ${i} ${words[(i * 7919) % 9]} ${(i * 7) % 1000}`,
  )
  const before = gzipSync(lines.join('\n'), { level: 9 })
  lines[150_000] += ' changed'
  return { before, after: gzipSync(lines.join('\n'), { level: 9 }) }
}

/** 600 kB of source-like code and the same with a line inserted halfway (a small archive-delta pair). */
export function patchedCode(): { text: Buffer; edited: Buffer } {
  const text = Buffer.from(sourceLikeText(11, 600_000))
  const edited = Buffer.concat([
    text.subarray(0, 300_000),
    Buffer.from('// patched\n'),
    text.subarray(300_000),
  ])
  return { text, edited }
}

/**
 * How a CLI run that should fail ended (a promisified execFile of the deltaport binary): its exit code
 * and output, or null when it succeeded, so the test's own expectations say what was wrong.
 */
export function cliFailure(
  run: Promise<unknown>,
): Promise<{ code: number; stdout: string; stderr: string } | null> {
  return run.then(
    () => null,
    (error: { code: number; stdout: string; stderr: string }) => error,
  )
}

/** The AgentError a promise rejects with (the test fails if it resolves or rejects with anything else). */
export async function agentFailure(promise: Promise<unknown>): Promise<AgentError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(AgentError)
  return error as AgentError
}

const runFile = promisify(execFile)
const AGENT_BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')

/**
 * `deltaport --config <configFile> --json <args>` as a user runs it, with `env` added to the process's:
 * the exit code and the parsed JSON document on success; on failure the code and the raw output.
 */
export async function jsonCli(
  configFile: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; json: Record<string, unknown> | null; stderr?: string; stdout?: string }> {
  try {
    const { stdout } = await runFile(
      process.execPath,
      [AGENT_BIN, '--config', configFile, '--json', ...args],
      {
        env: { ...process.env, ...env },
      },
    )
    return { code: 0, json: JSON.parse(stdout) as Record<string, unknown> }
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string }
    return { code: e.code, json: null, stderr: e.stderr, stdout: e.stdout }
  }
}
