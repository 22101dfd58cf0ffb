/**
 * HTML and SVG text with escaping by construction: the `html` tag escapes
 * every interpolated value unless it is already Html (built by this tag or
 * by raw()). Input reports carry user data (service names, process names,
 * file names): they only ever reach the page through here.
 */

/** A piece of markup that is already safe to emit. */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes text for element content and quoted attribute values alike. */
export function esc(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ENTITIES[c]);
}

/** Markup taken as is: only for text this program wrote itself. */
export function raw(text: string): Html {
  return new Html(text);
}

export type Part = Html | string | number | null | undefined | false | readonly Part[];

function render(v: Part): string {
  if (v === null || v === undefined || v === false) return '';
  if (v instanceof Html) return v.text;
  if (Array.isArray(v)) return v.map(render).join('');
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : '';
  return esc(v);
}

/** Template tag: html`<p>${name}</p>` escapes name; arrays are joined; null/undefined/false vanish. */
export function html(strings: TemplateStringsArray, ...values: Part[]): Html {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1];
  return new Html(out);
}

/** Joins parts into one piece of markup. */
export function join(parts: readonly Part[], sep = ''): Html {
  return new Html(
    parts
      .map(render)
      .filter((s) => s !== '')
      .join(sep),
  );
}

/** A CSS-identifier-safe slug for ids and data attributes (the text itself still goes through esc). */
export function slug(s: string): string {
  const base = s
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  return base || 'x';
}
