// Package java stands in for github.com/pulumi/pulumi-java/pkg/codegen/java, which the Go
// module proxy here refuses. pulumi-docker-build imports it only for this struct, the Java
// part of its schema's language metadata (docs/toolchain.md, "pulumi-docker-build").
package java

// PackageInfo is the subset of upstream's Java package metadata that the provider sets,
// with upstream's JSON names.
type PackageInfo struct {
	BuildFiles                      string            `json:"buildFiles,omitempty"`
	GradleNexusPublishPluginVersion string            `json:"gradleNexusPublishPluginVersion,omitempty"`
	Dependencies                    map[string]string `json:"dependencies,omitempty"`
}
