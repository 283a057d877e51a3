// Command pulumi-language-python is the Pulumi language host for Python programs, built offline.
//
// Why this exists: the upstream host lives in a nested Go module of pulumi/pulumi
// (sdk/python/cmd/pulumi-language-python/v3) that the Go module proxy reachable from our
// machines does not serve at any version, while everything it is built from (the gRPC
// protocol, the Python toolchain helpers and the `pulumi-language-python-exec` script) ships
// in github.com/pulumi/pulumi/sdk/v3, which is served. This host implements the parts of the
// LanguageRuntime protocol that `pulumi preview/up/destroy/refresh/install/about` use for
// Python projects, on top of those sdk/v3 packages, and runs programs through the upstream
// exec script exactly as the upstream host does. Code generation, packing, linking, policy
// packs and Python plugins (RunPlugin) are not implemented and answer Unimplemented.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pbempty "google.golang.org/protobuf/types/known/emptypb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
)

// execScriptName is the upstream runner script, installed beside this binary.
const execScriptName = "pulumi-language-python-exec"

// bailExitCode is what the exec script exits with after it showed the user an actionable error.
const bailExitCode = 32

// listPluginsScript prints the pulumi-plugin.json of every installed distribution that ships
// one: that is how Python packages declare the resource plugin (and version) they need.
const listPluginsScript = `
import importlib.metadata as md, json, sys
out = []
for dist in md.distributions():
    for f in dist.files or []:
        if f.name == "pulumi-plugin.json":
            try:
                data = json.loads(f.read_text())
            except Exception as e:
                print(f"warning: unreadable {f}: {e}", file=sys.stderr)
                continue
            if data.get("resource"):
                out.append(data)
json.dump(out, sys.stdout)
`

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	execScript string

	mu            sync.Mutex
	engineAddress string
	running       []*exec.Cmd
}

func main() {
	engineAddress, root := parseArgs(os.Args[1:])
	self, err := os.Executable()
	if err != nil {
		fatalf("cannot locate own executable: %v", err)
	}
	if resolved, rerr := filepath.EvalSymlinks(self); rerr == nil {
		self = resolved
	}
	execScript := filepath.Join(filepath.Dir(self), execScriptName)
	if _, err := os.Stat(execScript); err != nil {
		fatalf("%s must sit beside %s: %v", execScriptName, self, err)
	}
	_ = root // the project root also arrives in every request's ProgramInfo

	h := &host{execScript: execScript, engineAddress: engineAddress}
	cancel := make(chan bool)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		h.killAll()
		close(cancel)
	}()

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancel,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
		Options: rpcutil.TracingServerInterceptorOptions(nil),
	})
	if err != nil {
		fatalf("could not start language host RPC server: %v", err)
	}
	// The engine reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fatalf("language host RPC server stopped: %v", err)
	}
}

// parseArgs takes the engine address (the last positional argument) and -root; every other
// flag the engine may pass (-tracing, -v, -logtostderr, legacy -virtualenv ...) is accepted
// and ignored, because the same settings arrive in each request's ProgramInfo.
func parseArgs(args []string) (engine, root string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-root" || a == "--root":
			if i+1 < len(args) {
				root = args[i+1]
				i++
			}
		case strings.HasPrefix(a, "-root=") || strings.HasPrefix(a, "--root="):
			root = a[strings.Index(a, "=")+1:]
		case strings.HasPrefix(a, "-"):
			// flags with a separate value are only -root above; others are -x or -x=v
		default:
			engine = a
		}
	}
	return engine, root
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pulumi-language-python: "+format+"\n", args...)
	os.Exit(1)
}

// options reads the `runtime.options` of Pulumi.yaml that the engine forwards.
func options(info *pulumirpc.ProgramInfo) (toolchain.PythonOptions, error) {
	opts := toolchain.PythonOptions{Toolchain: toolchain.Auto}
	if info == nil {
		return opts, errors.New("request carries no program info")
	}
	opts.Root = info.GetRootDirectory()
	opts.ProgramDir = info.GetProgramDirectory()
	if opts.ProgramDir == "" {
		opts.ProgramDir = opts.Root
	}
	fields := info.GetOptions().GetFields()
	if v, ok := fields["virtualenv"]; ok {
		opts.Virtualenv = v.GetStringValue()
		if opts.Virtualenv != "" && !filepath.IsAbs(opts.Virtualenv) {
			opts.Virtualenv = filepath.Join(opts.Root, opts.Virtualenv)
		}
	}
	if v, ok := fields["toolchain"]; ok {
		switch name := v.GetStringValue(); name {
		case "", "auto":
		case "pip":
			opts.Toolchain = toolchain.Pip
		case "poetry":
			opts.Toolchain = toolchain.Poetry
		case "uv":
			opts.Toolchain = toolchain.Uv
		default:
			return opts, fmt.Errorf("runtime option toolchain=%q: expected pip, poetry or uv", name)
		}
	}
	if v, ok := fields["typechecker"]; ok && v.GetStringValue() != "" {
		return opts, fmt.Errorf("runtime option typechecker=%q is not supported by this offline-built "+
			"language host; remove it from Pulumi.yaml", v.GetStringValue())
	}
	return opts, nil
}

func resolve(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, toolchain.PythonOptions, error) {
	opts, err := options(info)
	if err != nil {
		return nil, opts, status.Error(codes.InvalidArgument, err.Error())
	}
	tc, err := toolchain.ResolveToolchain(opts)
	if err != nil {
		return nil, opts, status.Errorf(codes.FailedPrecondition, "python toolchain: %v", err)
	}
	return tc, opts, nil
}

type pluginJSON struct {
	Name             string `json:"name"`
	Version          string `json:"version"`
	Server           string `json:"server"`
	Parameterization *struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Value   []byte `json:"value"`
	} `json:"parameterization"`
}

// installedPlugins asks the program's Python which packages declare a resource plugin.
func installedPlugins(ctx context.Context, tc toolchain.Toolchain) ([]pluginJSON, error) {
	cmd, err := tc.Command(ctx, "-c", listPluginsScript)
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing installed Pulumi packages with %s failed: %w: %s",
			cmd.Path, err, strings.TrimSpace(stderr.String()))
	}
	var plugins []pluginJSON
	if err := json.Unmarshal(out, &plugins); err != nil {
		return nil, fmt.Errorf("listing installed Pulumi packages: bad output %q: %w", out, err)
	}
	return plugins, nil
}

// programPlugins resolves the program's Python and lists its installed resource plugins:
// what GetRequiredPackages and GetRequiredPlugins both answer from, as gRPC status errors.
func programPlugins(ctx context.Context, info *pulumirpc.ProgramInfo) ([]pluginJSON, error) {
	tc, _, err := resolve(info)
	if err != nil {
		return nil, err
	}
	plugins, err := installedPlugins(ctx, tc)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return plugins, nil
}

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.mu.Lock()
	h.engineAddress = req.GetEngineAddress()
	h.mu.Unlock()
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *pbempty.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: strings.TrimPrefix(version.Version, "v")}, nil
}

func (h *host) GetRequiredPackages(ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	plugins, err := programPlugins(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPackagesResponse{}
	for _, p := range plugins {
		dep := &pulumirpc.PackageDependency{
			Kind: "resource", Name: p.Name, Version: p.Version, Server: p.Server,
		}
		if p.Parameterization != nil {
			dep.Parameterization = &pulumirpc.PackageParameterization{
				Name: p.Parameterization.Name, Version: p.Parameterization.Version,
				Value: p.Parameterization.Value,
			}
		}
		resp.Packages = append(resp.Packages, dep)
	}
	return resp, nil
}

func (h *host) GetRequiredPlugins(ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	plugins, err := programPlugins(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPluginsResponse{}
	for _, p := range plugins {
		if p.Parameterization != nil {
			continue // parameterized packages are only expressible through GetRequiredPackages
		}
		resp.Plugins = append(resp.Plugins, &pulumirpc.PluginDependency{
			Kind: "resource", Name: p.Name, Version: p.Version, Server: p.Server,
		})
	}
	return resp, nil
}

// Run executes the program through the upstream exec script, as the upstream host does.
func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	tc, _, err := resolve(req.GetInfo())
	if err != nil {
		return nil, err
	}
	if req.GetAttachDebugger() {
		return nil, status.Error(codes.Unimplemented, "attaching a debugger is not supported by this host")
	}
	h.mu.Lock()
	engine := h.engineAddress
	h.mu.Unlock()

	program := req.GetInfo().GetEntryPoint()
	if program == "" {
		program = "."
	}
	args := []string{
		"-u", h.execScript,
		"--monitor", req.GetMonitorAddress(),
		"--engine", engine,
		"--project", req.GetProject(),
		"--stack", req.GetStack(),
		"--pwd", req.GetPwd(),
		"--dry_run", strconv.FormatBool(req.GetDryRun()),
		"--parallel", strconv.Itoa(int(req.GetParallel())),
		"--organization", req.GetOrganization(),
		"--root_directory", req.GetInfo().GetRootDirectory(),
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "python toolchain: %v", err)
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cfg, err := json.Marshal(req.GetConfig())
	if err != nil {
		return nil, err
	}
	secretKeys, err := json.Marshal(req.GetConfigSecretKeys())
	if err != nil {
		return nil, err
	}
	cmd.Env = append(cmd.Env, "PULUMI_CONFIG="+string(cfg), "PULUMI_CONFIG_SECRET_KEYS="+string(secretKeys))
	cmd.Dir = req.GetInfo().GetProgramDirectory()
	if cmd.Dir == "" {
		cmd.Dir = req.GetPwd()
	}
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr

	if err := cmd.Start(); err != nil {
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("could not start %s: %v", cmd.Path, err)}, nil
	}
	h.track(cmd, true)
	err = cmd.Wait()
	h.track(cmd, false)
	if err == nil {
		return &pulumirpc.RunResponse{}, nil
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if exitErr.ExitCode() == bailExitCode {
			return &pulumirpc.RunResponse{Bail: true}, nil
		}
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
		}, nil
	}
	return &pulumirpc.RunResponse{Error: fmt.Sprintf("running %s: %v", cmd.Path, err)}, nil
}

func (h *host) track(cmd *exec.Cmd, add bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if add {
		h.running = append(h.running, cmd)
		return
	}
	for i, c := range h.running {
		if c == cmd {
			h.running = append(h.running[:i], h.running[i+1:]...)
			return
		}
	}
}

func (h *host) killAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.running {
		if c.Process != nil {
			_ = c.Process.Kill()
		}
	}
}

func (h *host) Cancel(context.Context, *pbempty.Empty) (*pbempty.Empty, error) {
	h.killAll()
	return &pbempty.Empty{}, nil
}

// streamWriter forwards installer output to the CLI while `pulumi install` runs.
type streamWriter struct {
	send   func(*pulumirpc.InstallDependenciesResponse) error
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	buf := append([]byte(nil), p...)
	msg := &pulumirpc.InstallDependenciesResponse{Stdout: buf}
	if w.stderr {
		msg = &pulumirpc.InstallDependenciesResponse{Stderr: buf}
	}
	if err := w.send(msg); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	tc, opts, err := resolve(req.GetInfo())
	if err != nil {
		return err
	}
	var mu sync.Mutex
	send := func(m *pulumirpc.InstallDependenciesResponse) error {
		mu.Lock()
		defer mu.Unlock()
		return server.Send(m)
	}
	stdout := streamWriter{send: send}
	stderr := streamWriter{send: send, stderr: true}
	dir := req.GetDirectory()
	if dir == "" {
		dir = opts.ProgramDir
	}
	return tc.InstallDependencies(server.Context(), dir, false /*useLanguageVersionTools*/, true,
		stdout, stderr)
}

func (h *host) RuntimeOptionsPrompts(context.Context, *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, _, err := resolve(req.GetInfo())
	if err != nil {
		return nil, err
	}
	info, err := tc.About(ctx)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "python toolchain: %v", err)
	}
	return &pulumirpc.AboutResponse{
		Executable: info.PythonExecutable,
		Version:    info.PythonVersion.String(),
	}, nil
}

func (h *host) GetProgramDependencies(ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, _, err := resolve(req.GetInfo())
	if err != nil {
		return nil, err
	}
	deps, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "listing python packages: %v", err)
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, d := range deps {
		resp.Dependencies = append(resp.Dependencies,
			&pulumirpc.DependencyInfo{Name: d.Name, Version: d.Version})
	}
	return resp, nil
}

// Compile-time check that io.Writer is satisfied (the toolchain takes io.Writer).
var _ io.Writer = streamWriter{}
