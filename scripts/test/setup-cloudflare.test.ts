import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { ENVIRONMENTS } from '../setup-cloudflare.ts'
import { readWranglerConfig } from '../wrangler-config.ts'

const exec = promisify(execFile)
const ROOT = join(import.meta.dirname, '..', '..')
const SCRIPT = join(ROOT, 'scripts', 'setup-cloudflare.ts')
const CONFIG = join(ROOT, 'wrangler.toml')

/** The script with no Cloudflare credentials, so a real wrangler call would fail the run. */
async function setup(args: string[]) {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^CLOUDFLARE_(API|ACCOUNT)|^CF_/.test(k)),
  )
  try {
    const { stdout, stderr } = await exec(process.execPath, [SCRIPT, ...args], {
      cwd: ROOT,
      env: { ...env, CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_SEND_METRICS: 'false' },
    })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

describe('scripts/setup-cloudflare.ts --dry-run', () => {
  it('prints the commands for every bucket, namespace and secret of each environment', async () => {
    const runs = await Promise.all(ENVIRONMENTS.map((env) => setup(['--env', env, '--dry-run'])))
    const buckets = new Set<string>()
    ENVIRONMENTS.forEach((env, i) => {
      const run = runs[i]!
      expect(run.code, run.stderr).toBe(0)
      const config = readWranglerConfig(CONFIG, env)
      expect(config.r2_buckets.length).toBeGreaterThan(0)
      for (const { binding, bucket_name } of config.r2_buckets) {
        const hint = /^ZONE_([A-Z]+)$/.exec(binding)?.[1]?.toLowerCase()
        const command = `$ npx wrangler r2 bucket create ${bucket_name}${hint ? ` --location ${hint}` : ''}`
        expect(run.stdout).toContain(`${binding}: ${command}   (skipped if it exists)`)
        expect(bucket_name).toMatch(new RegExp(`-${env}$`))
        buckets.add(bucket_name!)
      }
      for (const { binding, id } of config.kv_namespaces) {
        expect(run.stdout).toContain(`${binding}: $ npx wrangler kv namespace create ${id}`)
      }
      for (const secret of config.secrets?.required ?? []) {
        expect(run.stdout).toContain(`$ npx wrangler secret put ${secret} --env ${env}`)
      }
      expect(run.stdout).toContain('OPERATOR_TOKEN')
      // Key secrets need keys the edge can parse: never told to take a random string.
      for (const secret of ['MAINTAINER_KEYS', 'INDEX_SIGNING_KEY']) {
        const line = run.stdout.split('\n').find((l) => l.includes(`secret put ${secret} `))
        expect(line).toContain('deltaport keygen')
        expect(line).not.toContain('openssl rand')
      }
      expect(run.stdout).toContain(`npx wrangler deploy --env ${env}`)
    })
    // Every environment has its own buckets.
    const perEnv = readWranglerConfig(CONFIG, 'dev').r2_buckets.length
    expect(buckets.size).toBe(perEnv * ENVIRONMENTS.length)
  })

  it('refuses an unknown environment and a config without it', async () => {
    const unknown = await setup(['--env', 'qa', '--dry-run'])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain('--env dev|staging|production')
    // Without [env.dev] wrangler would fall back to the top level, which the setup must never provision.
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-setup-'))
    const topLevelOnly = join(dir, 'wrangler.toml')
    await writeFile(topLevelOnly, (await readFile(CONFIG, 'utf8')).split(/^\[+env\./m)[0]!)
    const noEnv = await setup(['--env', 'dev', '--dry-run', '--config', topLevelOnly])
    await rm(dir, { recursive: true, force: true })
    expect(noEnv.code).toBe(1)
    expect(noEnv.stderr).toContain('has no [env.dev] section')
  })
})
