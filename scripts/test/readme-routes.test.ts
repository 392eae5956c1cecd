import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ROUTES } from '../../workers/openapi/routes.ts'

/**
 * README's HTTP API table against the OpenAPI registry (workers/openapi/routes.ts), which
 * workers/test/openapi.test.ts holds to the routes the app serves: so a route added, moved or dropped
 * fails here until the table says so.
 */

const README = join(import.meta.dirname, '..', '..', 'README.md')

/** `METHOD /path` with every parameter as `{}`: README writes `:n` where the registry has `{part}`. */
const normal = (method: string, path: string) =>
  `${method.toUpperCase()} ${path.replace(/\{[A-Za-z]+\}|:[A-Za-z]+/g, '{}')}`

/** Each backticked route in the table's first cells, as written (`PUT …/uploads/:uploadId/parts/:n`). */
async function documentedRoutes(): Promise<{ method: string; path: string; who: string }[]> {
  const text = await readFile(README, 'utf8')
  const table = /^\| route \| who \| what \|\n\|---\|---\|---\|\n((?:\|.*\n)+)/m.exec(text)?.[1] ?? ''
  expect(table, 'the route table').not.toBe('')
  const routes: { method: string; path: string; who: string }[] = []
  for (const row of table.trimEnd().split('\n')) {
    const [, firstCell = '', who = ''] = /^\|((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|/.exec(row) ?? []
    for (const [, methods = '', path = ''] of firstCell.matchAll(
      /`((?:GET|HEAD|POST|PUT|DELETE)(?:\/(?:GET|HEAD|POST|PUT|DELETE))*) ([^`\s[?]+)/g,
    )) {
      // `…/start\|pause\|resume\|abort`: one route per alternative.
      const [, stem = '', last = ''] = /^(.*\/)([^/]*)$/.exec(path) ?? []
      for (const method of methods.split('/'))
        for (const segment of last.split('\\|'))
          routes.push({ method, path: stem + segment, who: who.trim() })
    }
  }
  return routes
}

/** A documented route as the registry's normal form: `…/rest` is the one registry route ending so. */
function resolve(route: { method: string; path: string }, registry: string[]): string {
  const wanted = normal(route.method, route.path.replace(/^…/, ''))
  if (!route.path.startsWith('…')) return wanted
  const [method, suffix] = wanted.split(' ')
  const matches = registry.filter((r) => r.startsWith(`${method} `) && r.endsWith(suffix ?? ''))
  return matches.length === 1 ? (matches[0] ?? wanted) : `${wanted} (${matches.length} routes end so)`
}

describe('README HTTP API table', () => {
  it('lists every route of the OpenAPI registry, and none it does not have', async () => {
    const registry = [...new Set(ROUTES.map((r) => normal(r.method, r.path)))].sort()
    const documented = [...new Set((await documentedRoutes()).map((r) => resolve(r, registry)))].sort()
    expect(documented).toEqual(registry)
  })

  it("says which routes need a bearer token as the registry's auth does", async () => {
    const registry = ROUTES.map((r) => normal(r.method, r.path))
    const bearer = new Set(ROUTES.filter((r) => r.auth === 'bearer').map((r) => normal(r.method, r.path)))
    // `maintainer` (PUBLISH_TOKEN) and `operator (OPERATOR_TOKEN)` are bearer tokens; the dashboard's
    // `operator` signs in through its login form (a session cookie) as well, so the registry lists none.
    const needsToken = (who: string) => who.startsWith('maintainer') || who.includes('OPERATOR_TOKEN')
    const wrong = (await documentedRoutes())
      .map((r) => ({ route: resolve(r, registry), who: r.who }))
      .filter(({ route, who }) => needsToken(who) !== bearer.has(route))
    expect(wrong).toEqual([])
  })
})
