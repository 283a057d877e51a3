// Package codegen stands in for pulumi-language-dotnet's codegen package, which the Go module
// proxy here refuses. pulumi-docker-build imports it only for this struct, the C# part of its
// schema's language metadata (docs/toolchain.md, "pulumi-docker-build").
package codegen

// CSharpPackageInfo is the subset of upstream's C# package metadata that the provider sets,
// with upstream's JSON names.
type CSharpPackageInfo struct {
	RespectSchemaVersion bool              `json:"respectSchemaVersion,omitempty"`
	PackageReferences    map[string]string `json:"packageReferences,omitempty"`
}
