/**
 * The command-line grammar: what a command declares, how its options are parsed and read, and
 * its help text. Internal to the `impel` command line.
 *
 * @module
 */
import { describe } from "../core/errors.ts";
import { usage } from "./exit.ts";
import type { CliIo } from "./io.ts";

/** One `--name` option of a command. */
export interface OptionSpec {
  /** The option's name, without the leading `--`. */
  readonly name: string;
  /** A string takes one value, a boolean none, a list is repeatable and comma-separated. */
  readonly kind: "string" | "boolean" | "list";
  /** One line for the help text. */
  readonly help: string;
  /** The value's placeholder in the help text. */
  readonly arg?: string;
  /** The value when neither the option nor its environment variable is set. */
  readonly fallback?: string;
  /** An environment variable that supplies the value when the option is not given. */
  readonly env?: string;
}

/** The parsed options by name. */
export type Values = Record<string, string | boolean | string[] | undefined>;

/** A command line split into options and positional arguments. */
export interface Parsed {
  /** The options given. */
  readonly values: Values;
  /** The arguments that are not options. */
  readonly positionals: string[];
}

/** A command: the words that select it, its help, its options and what it does. */
export interface Command {
  /** The words that select the command, e.g. `["checkpoints", "show"]`. */
  readonly path: readonly string[];
  /** One sentence; the overview shows its first clause. */
  readonly summary: string;
  /** The synopsis after `impel `. */
  readonly usage: string;
  /** More help, after the synopsis. */
  readonly details?: string;
  /** The options it takes (`--help` is added to every command). */
  readonly options: readonly OptionSpec[];
  /** How many positional arguments it takes; none by default. */
  readonly positionals?: number;
  /** Runs the command and resolves to its exit code. */
  run(args: Args, io: CliIo): Promise<number>;
}

/** `--help`, which every command takes. */
export const HELP: OptionSpec = { name: "help", kind: "boolean", help: "show this help" };

/** `--json`, for commands that can print JSON. */
export const JSON_OUT: OptionSpec = {
  name: "json",
  kind: "boolean",
  help: "print JSON instead of a table",
};

/** Splits `argv` into options (checked against `specs`) and positional arguments. */
export function parse(argv: readonly string[], specs: readonly OptionSpec[]): Parsed {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const values: Values = {};
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg === "-h") {
      values.help = true;
      continue;
    }
    if (!arg.startsWith("--")) {
      if (arg.startsWith("-") && arg.length > 1) throw usage(`unknown option ${arg}`);
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = byName.get(name);
    if (!spec) throw usage(`unknown option --${name}`);
    if (spec.kind === "boolean") {
      if (eq >= 0) throw usage(`--${name} takes no value`);
      values[name] = true;
      continue;
    }
    let value: string;
    if (eq >= 0) value = arg.slice(eq + 1);
    else {
      if (i + 1 >= argv.length) throw usage(`--${name} needs a value (${spec.arg ?? "VALUE"})`);
      value = argv[++i];
    }
    if (value === "") throw usage(`--${name} must not be empty`);
    if (spec.kind === "list") {
      values[name] = [...((values[name] as string[] | undefined) ?? []), ...value.split(",")];
    } else if (values[name] !== undefined) throw usage(`--${name} given twice`);
    else values[name] = value;
  }
  return { values, positionals };
}

/** Typed access to parsed options, with defaults from the spec and the environment. */
export class Args {
  /** Wraps the options `parsed` for `command`, reading defaults from `io`'s environment. */
  constructor(
    readonly command: Command,
    readonly parsed: Parsed,
    readonly io: CliIo,
  ) {}
  /** The option's value, else its environment variable, else its fallback. */
  string(name: string): string | undefined {
    const spec = this.command.options.find((o) => o.name === name);
    const v = this.parsed.values[name];
    if (typeof v === "string") return v;
    const fromEnv = spec?.env ? this.io.env(spec.env) : undefined;
    return fromEnv || spec?.fallback;
  }
  /** Like {@linkcode Args.string}, but a usage error when there is no value. */
  required(name: string, why = ""): string {
    const v = this.string(name);
    if (v === undefined) throw usage(`--${name} is required${why}`);
    return v;
  }
  /** Whether a boolean option was given. */
  flag(name: string): boolean {
    return this.parsed.values[name] === true;
  }
  /** Every value of a list option, in order. */
  list(name: string): string[] {
    return (this.parsed.values[name] as string[] | undefined) ?? [];
  }
  /** An integer option of at least `min`. */
  integer(name: string, fallback: number, min: number): number {
    const v = this.string(name);
    if (v === undefined) return fallback;
    if (!/^\d+$/.test(v) || Number(v) < min || !Number.isSafeInteger(Number(v))) {
      throw usage(`--${name} must be an integer >= ${min}, got ${describe(v)}`);
    }
    return Number(v);
  }
  /** A positive number of seconds. */
  seconds(name: string, fallback: number | undefined): number | undefined {
    const v = this.string(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0)) {
      throw usage(`--${name} must be a positive number of seconds, got ${describe(v)}`);
    }
    return n;
  }
  /** One of `choices`. */
  choice<T extends string>(name: string, choices: readonly T[], fallback: T): T {
    const v = this.string(name) ?? fallback;
    if (!choices.includes(v as T)) {
      throw usage(`--${name} must be one of ${choices.join(", ")}, got ${describe(v)}`);
    }
    return v as T;
  }
}

/** The line on exit codes that ends every help text. */
export const EXIT_HELP: string =
  "Exit codes: 0 done, 1 failed, 2 usage error, 3 not available, 4 not found, 5 cannot connect.";

/** A command's `--help` text. */
export function helpText(c: Command): string {
  const lines = [`${c.summary}\n`, `Usage: impel ${c.usage}\n`];
  if (c.details) lines.push(c.details.trim() + "\n");
  lines.push("Options:");
  for (const o of [...c.options, HELP]) {
    const left = `  --${o.name}${o.arg ? ` ${o.arg}` : ""}`;
    const extra = [o.fallback ? `default ${o.fallback}` : "", o.env ? `env ${o.env}` : ""].filter(
      Boolean,
    ).join("; ");
    lines.push(
      `${left.padEnd(30)} ${o.help}${extra ? ` (${extra})` : ""}${
        o.kind === "list" ? " [repeatable, or comma-separated]" : ""
      }`,
    );
  }
  lines.push("", EXIT_HELP);
  return lines.join("\n") + "\n";
}
