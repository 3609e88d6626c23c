// Every public member has documentation: each name lib/index.ts exports, and each public
// property, method and accessor of the exported classes and interfaces (members marked
// @internal are stripped from the published types, so they are exempt). Read with the
// TypeScript compiler API from the sources, as editors show it.
import * as path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');

function undocumented(): string[] {
  const program = ts.createProgram([path.join(ROOT, 'lib/index.ts')], { strict: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS });
  const checker = program.getTypeChecker();
  const index = program.getSourceFile(path.join(ROOT, 'lib/index.ts'))!;
  const missing: string[] = [];
  const hasDoc = (node: ts.Node): boolean => ts.getJSDocCommentsAndTags(node).length > 0;
  const isInternal = (node: ts.Node): boolean => ts.getJSDocTags(node).some((t) => t.tagName.text === 'internal') || /@internal/.test(node.getFullText().slice(0, node.getLeadingTriviaWidth()));
  for (const exported of checker.getExportsOfModule(checker.getSymbolAtLocation(index)!)) {
    const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
    for (const decl of symbol.declarations ?? []) {
      const owner = ts.isVariableDeclaration(decl) ? decl.parent.parent : decl;
      if (!hasDoc(owner)) missing.push(exported.name);
      if (!ts.isClassDeclaration(decl) && !ts.isInterfaceDeclaration(decl)) continue;
      for (const m of decl.members) {
        const modifiers = ts.canHaveModifiers(m) ? ts.getModifiers(m) ?? [] : [];
        if (modifiers.some((x) => x.kind === ts.SyntaxKind.PrivateKeyword || x.kind === ts.SyntaxKind.ProtectedKeyword)) continue;
        if (ts.isConstructorDeclaration(m)) {
          if (!hasDoc(m) && !isInternal(m) && m.parameters.length > 0) missing.push(`${exported.name}.constructor`);
          continue;
        }
        if (!m.name || ts.isPrivateIdentifier(m.name)) continue;
        if (isInternal(m) || hasDoc(m)) continue;
        missing.push(`${exported.name}.${m.name.getText()}`);
      }
    }
  }
  return [...new Set(missing)].sort();
}

describe('documentation', () => {
  it('every public export and member has a JSDoc comment', () => {
    expect(undocumented()).toEqual([]);
  });
});
