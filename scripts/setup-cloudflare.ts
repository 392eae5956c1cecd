/**
 * Creates the Cloudflare resources one wrangler.toml environment needs, with wrangler, and says which
 * secrets to set. Idempotent: existing buckets and namespaces are skipped (and their ids reused).
 *
 *   node scripts/setup-cloudflare.ts --env staging [--dry-run] [--write-ids] [--config wrangler.toml]
 *   npm run setup:cloudflare -- --env staging --dry-run
 *
 * - R2: every `r2_buckets` bucket of the environment (`wrangler r2 bucket create`); zone buckets (binding
 *   ZONE_<LOCATION>) get that R2 location hint.
 * - KV: every `kv_namespaces` entry whose `id` is still a placeholder (not a 32-hex id): the placeholder is
 *   the namespace title to create (`wrangler kv namespace create <title>`). The ids are printed; with
 *   `--write-ids` the placeholders in wrangler.toml are replaced by them (`npm run types` afterwards).
 * - Durable Objects need nothing here: `wrangler deploy --env <e>` creates them from [[migrations]].
 * - Secrets (`secrets.required`): listed with `wrangler secret list` and explained; never generated or
 *   printed by this script — `wrangler secret put` prompts for them.
 *
 * `--dry-run` runs no wrangler command (no account needed) and prints what it would run.
 */
import { execFile } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { parseArgs, promisify } from 'node:util'
import { z } from 'zod'
import { readWranglerConfig } from './wrangler-config.ts'

const ROOT = join(import.meta.dirname, '..')
const WRANGLER = join(ROOT, 'node_modules', '.bin', 'wrangler')
const exec = promisify(execFile)

export const ENVIRONMENTS = ['dev', 'staging', 'production'] as const
const Environment = z.enum(ENVIRONMENTS)
/** R2 location hints wrangler accepts (`wrangler r2 bucket create --location`). */
const LOCATIONS = new Set(['weur', 'eeur', 'apac', 'wnam', 'enam', 'oc'])
const KV_ID = /^[0-9a-f]{32}$/

/** Why each secret exists, for the instructions; an unknown one still gets its `secret put` line. */
const SECRET_PURPOSE: Record<string, string> = {
  PUBLISH_TOKEN:
    'the maintainers’ bearer token for publish and rollout control (the CLI reads it from DELTAPORT_TOKEN)',
  OPERATOR_TOKEN: 'the operators’ bearer token / login password for GET /dashboard and the operator routes',
  DEVICE_TOKEN_SECRET:
    'the HMAC key of device credentials (POST /v1/devices/enroll); a long random string; rotate with "<new> <old>", later "<new>"',
  MAINTAINER_KEYS:
    'the maintainers’ public keys (`deltaport keygen` prints publicKey), whitespace-separated, or root:<digest> to follow the root chain from root 1 (`deltaport root verify` prints it): the edge then refuses manifests and yank statements the maintainers did not sign; blank turns that check off',
  INDEX_SIGNING_KEY:
    'the edge’s own Ed25519 private key (`deltaport keygen --out edge-index.key.json`, then its privateKey; never a maintainer’s): index answers then carry short-lived signed statements, and devices listing its public half in indexKeys refuse stale indexes; blank sends them unsigned',
}

const RANDOM_VALUE = 'e.g. a value from: openssl rand -base64 32'
/**
 * Where a secret's value comes from when it is not a random string: the key secrets hold keys in the
 * form the edge parses, and a random string there is refused by the routes that need them.
 */
const SECRET_VALUE_HINT: Record<string, string> = {
  MAINTAINER_KEYS: 'value: the publicKey of each maintainer’s `deltaport keygen` (not a random string)',
  INDEX_SIGNING_KEY:
    'value: the privateKey of `deltaport keygen --out edge-index.key.json` (not a random string)',
}

export interface SetupPlan {
  env: z.infer<typeof Environment>
  workerName: string
  buckets: { binding: string; bucket: string; location?: string }[]
  namespaces: { binding: string; title: string }[]
  readyNamespaces: { binding: string; id: string }[]
  secrets: string[]
  durableObjects: string[]
}

/** What the environment needs, read through wrangler's own config reader (env resolution included). */
export async function planSetup(configPath: string, env: string): Promise<SetupPlan> {
  const parsedEnv = Environment.parse(env)
  const text = await readFile(configPath, 'utf8')
  // wrangler falls back to the top level for an unknown env; the setup must not create those resources.
  if (!new RegExp(`^\\[+env\\.${parsedEnv}[.\\]]`, 'm').test(text)) {
    throw new Error(`${configPath} has no [env.${parsedEnv}] section`)
  }
  const config = readWranglerConfig(configPath, parsedEnv)
  const buckets = config.r2_buckets.map(({ binding, bucket_name }) => {
    if (!bucket_name) throw new Error(`R2 binding ${binding} has no bucket_name in env ${parsedEnv}`)
    const hint = /^ZONE_([A-Z]+)$/.exec(binding)?.[1]?.toLowerCase()
    return { binding, bucket: bucket_name, ...(hint && LOCATIONS.has(hint) ? { location: hint } : {}) }
  })
  const namespaces: SetupPlan['namespaces'] = []
  const readyNamespaces: SetupPlan['readyNamespaces'] = []
  for (const { binding, id } of config.kv_namespaces) {
    if (!id) throw new Error(`KV binding ${binding} has no id in env ${parsedEnv}`)
    if (KV_ID.test(id)) readyNamespaces.push({ binding, id })
    else namespaces.push({ binding, title: id })
  }
  return {
    env: parsedEnv,
    workerName: config.name ?? 'deltaport-edge',
    buckets,
    namespaces,
    readyNamespaces,
    secrets: config.secrets?.required ?? [],
    durableObjects: config.durable_objects.bindings.map((b) => `${b.name} (${b.class_name})`),
  }
}

const KvList = z.array(z.object({ id: z.string(), title: z.string() }))
const SecretList = z.array(z.object({ name: z.string() }))

interface Wrangler {
  /** A read-only query; its stdout. */
  query(args: string[]): Promise<string>
  /** A command that changes the account. */
  change(args: string[]): Promise<void>
}

const realWrangler: Wrangler = {
  async query(args) {
    return (await exec(WRANGLER, args, { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 })).stdout
  },
  async change(args) {
    console.log(`$ npx wrangler ${args.join(' ')}`)
    const { stdout, stderr } = await exec(WRANGLER, args, { cwd: ROOT })
    process.stdout.write(stdout)
    process.stderr.write(stderr)
  },
}

export async function setup(
  plan: SetupPlan,
  options: { dryRun: boolean; writeIds: boolean; configPath: string },
): Promise<void> {
  const say = (line: string) => console.log(line)
  const dry = options.dryRun
  say(`deltaport setup for env "${plan.env}" (worker ${plan.workerName})${dry ? ' — dry run' : ''}`)

  say('\nR2 buckets')
  const existingBuckets = dry ? new Set<string>() : await listBuckets(realWrangler)
  for (const { binding, bucket, location } of plan.buckets) {
    const args = ['r2', 'bucket', 'create', bucket, ...(location ? ['--location', location] : [])]
    if (existingBuckets.has(bucket)) say(`  ${binding}: ${bucket} exists, skipped`)
    else if (dry) say(`  ${binding}: $ npx wrangler ${args.join(' ')}   (skipped if it exists)`)
    else await realWrangler.change(args)
  }

  say('\nKV namespaces')
  const existing = dry ? [] : KvList.parse(JSON.parse(await realWrangler.query(['kv', 'namespace', 'list'])))
  const ids = new Map<string, string>()
  for (const { binding, title } of plan.namespaces) {
    const args = ['kv', 'namespace', 'create', title]
    const found = existing.find((n) => n.title === title)
    if (found) {
      say(`  ${binding}: ${title} exists (id ${found.id}), skipped`)
      ids.set(title, found.id)
    } else if (dry) {
      say(`  ${binding}: $ npx wrangler ${args.join(' ')}   (skipped if it exists)`)
    } else {
      await realWrangler.change(args)
      const created = KvList.parse(JSON.parse(await realWrangler.query(['kv', 'namespace', 'list']))).find(
        (n) => n.title === title,
      )
      if (!created) throw new Error(`namespace ${title} was created but is not listed`)
      ids.set(title, created.id)
    }
  }
  for (const { binding, id } of plan.readyNamespaces) say(`  ${binding}: id ${id} already in the config`)
  if (ids.size > 0) await reportIds(ids, options)
  else if (dry && plan.namespaces.length > 0)
    say('  (the real run prints each new id and, with --write-ids, writes it into wrangler.toml)')

  say('\nDurable Objects (created by `wrangler deploy` from [[migrations]], nothing to do here)')
  for (const d of plan.durableObjects) say(`  ${d}`)

  say('\nSecrets (never stored in wrangler.toml; `wrangler secret put` prompts for the value)')
  const setSecrets = dry ? new Set<string>() : await listSecrets(realWrangler, plan.env)
  for (const name of plan.secrets) {
    const state = dry ? '' : setSecrets.has(name) ? ' [set]' : ' [missing]'
    say(`  ${name}${state}: ${SECRET_PURPOSE[name] ?? 'required by the worker'}`)
    say(
      `    $ npx wrangler secret put ${name} --env ${plan.env}     # ${SECRET_VALUE_HINT[name] ?? RANDOM_VALUE}`,
    )
  }
  say(`\nThen: npx wrangler deploy --env ${plan.env}   (npm run deploy:check first)`)
}

async function listBuckets(wrangler: Wrangler): Promise<Set<string>> {
  const out = await wrangler.query(['r2', 'bucket', 'list'])
  return new Set([...out.matchAll(/^name:\s+(\S+)\s*$/gm)].map((m) => m[1]!))
}

async function listSecrets(wrangler: Wrangler, env: string): Promise<Set<string>> {
  // Fails while the worker was never deployed: then nothing is set.
  const out = await wrangler.query(['secret', 'list', '--env', env, '--format', 'json']).catch(() => '[]')
  const parsed = SecretList.safeParse(JSON.parse(out))
  return new Set(parsed.success ? parsed.data.map((s) => s.name) : [])
}

async function reportIds(ids: Map<string, string>, options: { writeIds: boolean; configPath: string }) {
  let text = await readFile(options.configPath, 'utf8')
  for (const [title, id] of ids) {
    const placeholder = `id = "${title}"`
    console.log(`  ${placeholder}  →  id = "${id}"`)
    if (options.writeIds) {
      if (!text.includes(placeholder)) throw new Error(`${placeholder} not found in ${options.configPath}`)
      text = text.replace(placeholder, `id = "${id}"`)
    }
  }
  if (options.writeIds) {
    await writeFile(options.configPath, text)
    console.log(`  wrote the ids into ${options.configPath}; now run: npm run types`)
  } else {
    console.log('  paste them into wrangler.toml (or rerun with --write-ids), then: npm run types')
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      env: { type: 'string' },
      'dry-run': { type: 'boolean', default: false },
      'write-ids': { type: 'boolean', default: false },
      config: { type: 'string', default: join(ROOT, 'wrangler.toml') },
    },
  })
  if (!values.env || !Environment.safeParse(values.env).success) {
    console.error(`usage: setup-cloudflare --env ${ENVIRONMENTS.join('|')} [--dry-run] [--write-ids]`)
    return 2
  }
  const configPath = resolve(values.config)
  try {
    const plan = await planSetup(configPath, values.env)
    await setup(plan, { dryRun: values['dry-run'], writeIds: values['write-ids'], configPath })
    return 0
  } catch (error) {
    console.error(`setup failed: ${(error as Error).message}`)
    return 1
  }
}

if (process.argv[1] && resolve(process.argv[1]) === import.meta.filename) {
  process.exitCode = await main()
}
