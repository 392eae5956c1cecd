import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bindingProblems } from '../deploy-check.ts'

/**
 * The binding-parity half of `npm run deploy:check` (the `wrangler deploy --dry-run` half bundles the
 * worker four times, ~15 s, and runs as its own step in .ci/run).
 */

const exec = promisify(execFile)
const ROOT = join(import.meta.dirname, '..', '..')
const CONFIG = join(ROOT, 'wrangler.toml')
let dir: string
let original: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deltaport-deploy-check-'))
  // A copy elsewhere needs an absolute `main`.
  original = (await readFile(CONFIG, 'utf8')).replace(
    /^main = "([^"]+)"/m,
    (_, main: string) => `main = "${join(ROOT, main)}"`,
  )
})
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

async function variant(name: string, edit: (text: string) => string): Promise<string> {
  const path = join(dir, `${name}.toml`)
  const text = edit(original)
  expect(text).not.toBe(original)
  await writeFile(path, text)
  return path
}

describe('deploy:check binding parity', () => {
  it('finds every top-level binding in every environment of wrangler.toml, on separate resources', () => {
    expect(bindingProblems(CONFIG)).toEqual([])
  })

  it('names a binding added at the top level but not in an environment', async () => {
    const path = await variant('new-binding', (t) =>
      t.replace(
        /^\[\[r2_buckets\]\]/m,
        '[[r2_buckets]]\nbinding = "EXTRA"\nbucket_name = "extra"\n\n[[r2_buckets]]',
      ),
    )
    expect(bindingProblems(path)).toEqual([
      'env dev: R2 binding EXTRA is missing',
      'env staging: R2 binding EXTRA is missing',
      'env production: R2 binding EXTRA is missing',
    ])
  })

  it('flags a resource shared by two environments and a missing secret', async () => {
    const path = await variant('shared', (t) =>
      t
        .replace('bucket_name = "deltaport-artifacts-staging"', 'bucket_name = "deltaport-artifacts-dev"')
        .replace(/(\[env\.production\.secrets\]\nrequired = )\[[^\]]*\]/, '$1["PUBLISH_TOKEN"]'),
    )
    const problems = bindingProblems(path)
    expect(problems).toContain('env staging: bucket deltaport-artifacts-dev is also used by env dev')
    expect(problems).toContain('env production: required secret OPERATOR_TOKEN is missing')
  })

  it('checks rate limit bindings: present in every environment, each on its own namespace', async () => {
    const missing = await variant('no-ratelimit', (t) =>
      t.replace(/\[\[env\.staging\.ratelimits\]\][^[]+/, ''),
    )
    expect(bindingProblems(missing)).toEqual([
      'env staging: rate limit binding ENROLL_RATE_LIMITER is missing',
    ])
    const shared = await variant('shared-ratelimit', (t) =>
      t.replace(
        /(\[\[env\.production\.ratelimits\]\]\nname = "ENROLL_RATE_LIMITER"\nnamespace_id = )"\d+"/,
        '$1"1002"',
      ),
    )
    expect(bindingProblems(shared)).toEqual([
      'env production: rate limit namespace 1002 is also used by env dev',
    ])
  })

  it('exits 1 from the command line when parity fails, 0 when it holds', async () => {
    const script = join(ROOT, 'scripts', 'deploy-check.ts')
    const good = await exec(process.execPath, [script, '--skip-bundle'], { cwd: ROOT })
    expect(good.stdout).toContain('✓ bindings')
    const bad = await variant('bad-cli', (t) => t.replace(/\[\[env\.dev\.kv_namespaces\]\][^[]+/, ''))
    const failed = await exec(process.execPath, [script, '--skip-bundle', '--config', bad], {
      cwd: ROOT,
    }).then(
      () => null,
      (error: { code: number; stdout: string }) => error,
    )
    expect(failed?.code).toBe(1)
    expect(failed?.stdout).toContain('✗ env dev: KV binding CONFIG is missing')
  })
})
