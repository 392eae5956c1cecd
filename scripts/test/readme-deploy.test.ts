import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { readWranglerConfig } from '../wrangler-config.ts'

/**
 * README's "Deploying the edge" walks an operator through `wrangler secret put` for staging: a secret the
 * environment comes to require (wrangler.toml `[env.staging.secrets] required`) without a line there
 * leaves a deploy that refuses to start, and a line for one it no longer reads is a step for nothing.
 */

const ROOT = join(import.meta.dirname, '..', '..')

describe('README deploy steps', () => {
  it('put exactly the secrets the staging environment requires', async () => {
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8')
    const put = [...readme.matchAll(/wrangler secret put (\w+) --env staging/g)].map((m) => m[1])
    const required = readWranglerConfig(join(ROOT, 'wrangler.toml'), 'staging').secrets?.required ?? []
    expect([...new Set(put)].sort()).toEqual([...required].sort())
  })
})
