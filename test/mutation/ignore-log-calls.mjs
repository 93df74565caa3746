/**
 * A StrykerJS ignorer: no mutants inside `log.<level>(...)` statements of the activities (their text
 * and fields reach only the worker's log; no step reads them back, so no mutant there can change
 * what a merge does). Listed in test/mutation/equivalent-mutants.md.
 */
import { declareValuePlugin, PluginKind } from '@stryker-mutator/api/plugin';

const LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error']);

export const strykerPlugins = [
  declareValuePlugin(PluginKind.Ignore, 'log-calls', {
    shouldIgnore(path) {
      if (!path.isExpressionStatement()) return undefined;
      const call = path.node.expression;
      if (call.type !== 'CallExpression' || call.callee.type !== 'MemberExpression') return undefined;
      const { object, property } = call.callee;
      if (
        object.type === 'Identifier' &&
        object.name === 'log' &&
        property.type === 'Identifier' &&
        LEVELS.has(property.name)
      )
        return 'a log line: read by people, never by a step';
      return undefined;
    },
  }),
];
