/**
 * `npm run deploy:check`: can every wrangler.toml target be deployed? For the top level and each
 * environment (dev, staging, production):
 *
 * 1. Binding parity, through wrangler's own config reader: R2 buckets, KV namespaces, Durable Objects,
 *    rate limits, vars and required secrets are not inherited by wrangler environments, so a binding
 *    added at the top level but forgotten in an env deploys fine and fails at runtime there. Each env
 *    must bind every name the top level binds (to its own resources: bucket names, KV ids, rate limit
 *    namespaces and worker names must differ).
 * 2. `wrangler deploy --dry-run --env <e> --outdir <tmp>`: bundles the worker and validates the config
 *    for that target without an account.
 *
 * Exits 1 if any check fails. `node scripts/deploy-check.ts [--config wrangler.toml] [--skip-bundle]`
 */
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs, promisify } from 'node:util'
import { readWranglerConfig } from './wrangler-config.ts'

const ROOT = join(import.meta.dirname, '..')
const WRANGLER = join(ROOT, 'node_modules', '.bin', 'wrangler')
const exec = promisify(execFile)

export const DEPLOY_ENVIRONMENTS = ['dev', 'staging', 'production'] as const

interface Bindings {
  worker: string
  r2: Map<string, string>
  kv: Map<string, string>
  durableObjects: Map<string, string>
  rateLimits: Map<string, string>
  vars: Set<string>
  secrets: Set<string>
}

function readBindings(configPath: string, env?: string): Bindings {
  const c = readWranglerConfig(configPath, env)
  return {
    worker: c.name ?? '',
    r2: new Map(c.r2_buckets.map((b) => [b.binding, b.bucket_name ?? ''])),
    kv: new Map(c.kv_namespaces.map((n) => [n.binding, n.id ?? ''])),
    durableObjects: new Map(c.durable_objects.bindings.map((d) => [d.name, d.class_name])),
    rateLimits: new Map(c.ratelimits.map((r) => [r.name, r.namespace_id])),
    vars: new Set(Object.keys(c.vars)),
    secrets: new Set(c.secrets?.required ?? []),
  }
}

/** Every problem with the environments' bindings, as readable lines (empty: all good). */
export function bindingProblems(configPath: string, envs: readonly string[] = DEPLOY_ENVIRONMENTS): string[] {
  const top = readBindings(configPath)
  const problems: string[] = []
  const seen = {
    r2: new Map<string, string>(),
    kv: new Map<string, string>(),
    rateLimit: new Map<string, string>(),
    worker: new Map<string, string>(),
  }
  for (const env of envs) {
    const b = readBindings(configPath, env)
    const missing = (kind: string, want: Iterable<string>, have: { has(k: string): boolean }) => {
      for (const name of want) if (!have.has(name)) problems.push(`env ${env}: ${kind} ${name} is missing`)
    }
    missing('R2 binding', top.r2.keys(), b.r2)
    missing('KV binding', top.kv.keys(), b.kv)
    missing('Durable Object binding', top.durableObjects.keys(), b.durableObjects)
    missing('rate limit binding', top.rateLimits.keys(), b.rateLimits)
    missing('var', top.vars, b.vars)
    missing('required secret', top.secrets, b.secrets)
    for (const [name, cls] of b.durableObjects) {
      const want = top.durableObjects.get(name)
      if (want && want !== cls) problems.push(`env ${env}: ${name} binds class ${cls}, the top level ${want}`)
    }
    // Isolation: no two environments share a bucket, a namespace or a worker (its DOs live in the worker).
    const unique = (kind: keyof typeof seen, resource: string, what: string) => {
      const other = seen[kind].get(resource)
      if (other) problems.push(`env ${env}: ${what} ${resource} is also used by env ${other}`)
      else seen[kind].set(resource, env)
    }
    for (const bucket of new Set(b.r2.values())) unique('r2', bucket, 'bucket')
    for (const id of new Set(b.kv.values())) unique('kv', id, 'KV namespace')
    for (const id of new Set(b.rateLimits.values())) unique('rateLimit', id, 'rate limit namespace')
    unique('worker', b.worker, 'worker name')
  }
  return problems
}

/** `wrangler deploy --dry-run` for one target (undefined: the top level); its output on failure. */
async function dryRunDeploy(configPath: string, env: string | undefined, outRoot: string) {
  const started = performance.now()
  const args = ['deploy', '--dry-run', '--config', configPath, '--outdir', join(outRoot, env ?? 'top-level')]
  if (env) args.push('--env', env)
  try {
    const { stdout } = await exec(WRANGLER, args, {
      cwd: ROOT,
      env: { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_SEND_METRICS: 'false' },
      maxBuffer: 16 * 1024 * 1024,
    })
    const upload = /Total Upload: ([^\n]+)/.exec(stdout)?.[1]?.trim() ?? '?'
    return { ok: true, line: `upload ${upload}`, ms: performance.now() - started }
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; message: string }
    return { ok: false, line: `${e.stderr || e.stdout || e.message}`.trim(), ms: performance.now() - started }
  }
}

export async function deployCheck(options: { configPath: string; bundle: boolean }): Promise<boolean> {
  const problems = bindingProblems(options.configPath)
  for (const p of problems) console.log(`✗ ${p}`)
  if (problems.length === 0)
    console.log(`✓ bindings: ${DEPLOY_ENVIRONMENTS.join(', ')} bind everything the top level does`)
  if (!options.bundle) return problems.length === 0

  const outRoot = await mkdtemp(join(tmpdir(), 'deltaport-deploy-check-'))
  try {
    // Two at a time: each bundle is one esbuild run plus wrangler's start-up (~3 s on 2 cores).
    const targets = [undefined, ...DEPLOY_ENVIRONMENTS]
    const results = new Map<string | undefined, Awaited<ReturnType<typeof dryRunDeploy>>>()
    for (let i = 0; i < targets.length; i += 2) {
      const pair = targets.slice(i, i + 2)
      const done = await Promise.all(pair.map((env) => dryRunDeploy(options.configPath, env, outRoot)))
      for (const [j, env] of pair.entries()) results.set(env, done[j]!)
    }
    let ok = problems.length === 0
    for (const [env, r] of results) {
      const name = env ? `--env ${env}` : 'top level'
      console.log(
        `${r.ok ? '✓' : '✗'} wrangler deploy --dry-run ${name}: ${r.line} (${(r.ms / 1000).toFixed(1)} s)`,
      )
      ok &&= r.ok
    }
    return ok
  } finally {
    await rm(outRoot, { recursive: true, force: true })
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      config: { type: 'string', default: join(ROOT, 'wrangler.toml') },
      'skip-bundle': { type: 'boolean', default: false },
    },
  })
  const ok = await deployCheck({ configPath: resolve(values.config), bundle: !values['skip-bundle'] })
  return ok ? 0 : 1
}

if (process.argv[1] && resolve(process.argv[1]) === import.meta.filename) {
  process.exitCode = await main()
}
