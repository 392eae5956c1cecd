import { randomBytes } from 'node:crypto'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfig } from '../config.ts'
import { AgentError } from '../errors.ts'

describe('a missing config file', () => {
  it('is named with the folder it was looked for in, since `npm run deltaport` runs in the checkout', async () => {
    const name = `absent-${randomBytes(6).toString('hex')}.json`
    const error = await loadConfig(name).catch((e: unknown) => e)
    if (!(error instanceof AgentError)) throw new Error(`expected an AgentError, got ${String(error)}`)
    expect(error.code).toBe('config')
    expect(error.message).toContain(`there is none at ${resolve(name)}`)
    expect(error.message).toContain('(create one: see README "Agent config"), or pass --config <file>')
  })
})
