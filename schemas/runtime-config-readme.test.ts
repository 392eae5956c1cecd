import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { RuntimeConfig } from './runtime-config.ts'

/**
 * README's table of runtime config keys (Runtime configuration (KV)) against the schema the edge and
 * `deltaport config check` parse the document with: a key added or dropped, a default or a bound changed
 * in the schema without the table following, fails here.
 */

interface JsonSchema {
  type?: string
  properties?: Record<string, JsonSchema>
  minimum?: number
  maximum?: number
  enum?: unknown[]
}

/** Each setting's dotted path → its JSON Schema; records (`regions.map`) are one setting, not a section. */
function schemaLeaves(): Map<string, JsonSchema> {
  const leaves = new Map<string, JsonSchema>()
  const walk = (schema: JsonSchema, path: string[]) => {
    if (schema.type === 'object' && schema.properties) {
      for (const [key, child] of Object.entries(schema.properties)) walk(child, [...path, key])
    } else leaves.set(path.join('.'), schema)
  }
  walk(z.toJSONSchema(RuntimeConfig, { io: 'input' }) as JsonSchema, [])
  return leaves
}

/** The value at a dotted path of the config an empty document gives. */
function defaultAt(path: string): unknown {
  return path
    .split('.')
    .reduce<unknown>((node, key) => (node as Record<string, unknown>)[key], RuntimeConfig.parse({}))
}

async function documentedRows(): Promise<{ key: string; defaultValue: string; bounds: string }[]> {
  const readme = await readFile(join(import.meta.dirname, '..', 'README.md'), 'utf8')
  const table = /^\| key \| default \| bounds \| what \|\n\|---\|---\|---\|---\|\n((?:\|.*\n)+)/m.exec(
    readme,
  )?.[1]
  expect(table, 'the runtime config table').toBeDefined()
  return (table ?? '')
    .trimEnd()
    .split('\n')
    .map((row) => {
      // No cell holds a pipe: choices are comma-separated, defaults are JSON.
      const [key = '', defaultValue = '', bounds = ''] = row
        .slice(1, -1)
        .split('|')
        .map((cell) => cell.trim())
      return { key: key.replaceAll('`', ''), defaultValue, bounds }
    })
}

describe('README runtime config table', () => {
  it('lists every key of the schema, and none it does not have', async () => {
    const documented = (await documentedRows()).map((row) => row.key).sort()
    expect(documented).toEqual([...schemaLeaves().keys()].sort())
  })

  it("shows each key's default as the schema gives it", async () => {
    const rows = await documentedRows()
    const shown = rows.map((row) => [row.key, JSON.parse(row.defaultValue.replaceAll('`', '')) as unknown])
    expect(shown).toEqual(rows.map((row) => [row.key, defaultAt(row.key)]))
  })

  it("shows each number's bounds and each choice's values as the schema has them", async () => {
    const leaves = schemaLeaves()
    const wrong: string[] = []
    for (const { key, bounds } of await documentedRows()) {
      const schema = leaves.get(key)
      if (!schema) continue
      let expected = ''
      if (schema.enum) expected = schema.enum.map((value) => `\`${String(value)}\``).join(', ')
      else if (schema.type === 'integer' || schema.type === 'number') {
        const { minimum, maximum } = schema
        expected =
          maximum !== undefined && maximum < Number.MAX_SAFE_INTEGER
            ? `${minimum}–${maximum}`
            : `≥ ${minimum}`
      } else continue
      if (bounds !== expected) wrong.push(`${key}: README "${bounds}", schema "${expected}"`)
    }
    expect(wrong).toEqual([])
  })
})
