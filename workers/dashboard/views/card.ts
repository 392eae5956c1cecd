import { html } from 'hono/html'
import type { Section } from '../sections/section.ts'
import type { Html } from './layout.ts'

/** One section's box: its content, or the inline error its loader caught. */
export function card<T>(
  id: string,
  title: string,
  section: Section<T>,
  render: (data: T) => Html,
  options: { wide?: boolean } = {},
): Html {
  const body = section.ok
    ? render(section.data)
    : html`<p class="error" role="alert">This section could not be loaded: ${section.error}</p>`
  return html`<section class="card${options.wide ? ' wide' : ''}" id="${id}" aria-labelledby="${id}-title"><h2 id="${id}-title">${title}</h2>${body}</section>`
}
