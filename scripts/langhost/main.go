// virtfleet's Pulumi Python language host (the `pulumi-language-python` plugin).
//
// The upstream host is a Go module without release tags, and the Go module proxy here refuses both its
// version list and commit queries, so it cannot be built offline.  This host speaks the same
// LanguageRuntime gRPC protocol (the stubs of the pulumi sdk/v3 module the CLI is built from) and runs
// programs through the SDK's own `pulumi-language-python-exec` script, started by
// scripts/pulumi_program_exec.py.  It supports what virtfleet needs: run a program from a virtualenv
// (Pulumi.yaml `runtime.options.virtualenv`), pass config and secret keys, and report no plugins to
// acquire (dynamic providers ship with the SDK).  A Go binary: the CLI starts a language host twice per
// `pulumi up`/`preview`, and a Python one cost ~0.2 s of interpreter start each time.
//
// Protocol contract: started as `pulumi-language-python [flags] ENGINE_ADDRESS`, it prints the port it
// listens on as the first line of stdout and serves until the engine stops it.
//
// Environment (set by the wrapper scripts/pulumi-cli.sh installs): VIRTFLEET_PYTHON (interpreter when
// the project names no virtualenv), VIRTFLEET_PROGRAM_EXEC (scripts/pulumi_program_exec.py),
// VIRTFLEET_LANGHOST_DIR (where pulumi-language-python-exec is), VIRTFLEET_PULUMI_VERSION.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

const (
	execScript         = "pulumi-language-python-exec"
	userActionableExit = 32 // the exec script's "message already shown" exit code
)

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engine      string
	execDir     string
	programExec string
	python      string
	warm        sync.Once
}

// interpreter is the python of the program's virtualenv option, else the default one.
func (h *host) interpreter(info *pulumirpc.ProgramInfo) (string, error) {
	venv := ""
	if info != nil && info.GetOptions() != nil {
		if v, ok := info.GetOptions().AsMap()["virtualenv"].(string); ok {
			venv = v
		}
	}
	if venv == "" {
		return h.python, nil
	}
	if !filepath.IsAbs(venv) {
		root := info.GetRootDirectory()
		if root == "" {
			root, _ = os.Getwd()
		}
		venv = filepath.Join(root, venv)
	}
	py := filepath.Join(venv, "bin", "python")
	if _, err := os.Stat(py); err != nil {
		return "", fmt.Errorf("Pulumi.yaml runtime option virtualenv=%q has no bin/python; create it with "+
			"`python3 -m venv %s` and install requirements.txt into it", venv, venv)
	}
	return py, nil
}

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.GetEngineAddress() != "" {
		h.engine = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	v := os.Getenv("VIRTFLEET_PULUMI_VERSION")
	if v == "" {
		v = "3.0.0"
	}
	return &pulumirpc.PluginInfo{Version: v}, nil
}

func (h *host) GetRequiredPlugins(_ context.Context, req *pulumirpc.GetRequiredPluginsRequest) (*pulumirpc.GetRequiredPluginsResponse, error) {
	h.startProvider(req.GetInfo())
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *host) GetRequiredPackages(_ context.Context, req *pulumirpc.GetRequiredPackagesRequest) (*pulumirpc.GetRequiredPackagesResponse, error) {
	h.startProvider(req.GetInfo())
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

// startProvider starts the dynamic-provider process in its waiting (`--zygote`) mode, once, from the
// first call that names the program: the CLI starts a language host to ask for the program's plugins
// well before it runs the program (it derives the stack's secrets key in between), so the provider
// imports on a core that is otherwise idle, and is ready when the engine launches the provider plugin
// (see handoff.go).  Run then has it fork the program, after which it opens the hosts' connections
// for an update (scripts/provider_handoff.py).  One per CLI: a second one finds the socket name taken and leaves;
// with no plugin launch before the CLI exits, it leaves too.  Failing to start it costs nothing but time.
func (h *host) startProvider(info *pulumirpc.ProgramInfo) {
	script := os.Getenv("VIRTFLEET_PROVIDER_HOST")
	if info == nil || script == "" {
		return
	}
	h.warm.Do(func() {
		py, err := h.interpreter(info)
		if err != nil {
			return
		}
		cmd := exec.Command(py, "-u", script, "--zygote", strconv.Itoa(os.Getppid()))
		cmd.Dir = info.GetRootDirectory()
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if cmd.Start() == nil {
			go cmd.Wait() //nolint:errcheck // reaped while this host lives; the process outlives it
		}
	})
}

func (h *host) GetProgramDependencies(context.Context, *pulumirpc.GetProgramDependenciesRequest) (*pulumirpc.GetProgramDependenciesResponse, error) {
	return &pulumirpc.GetProgramDependenciesResponse{}, nil
}

func (h *host) InstallDependencies(*pulumirpc.InstallDependenciesRequest, grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse]) error {
	return nil
}

func (h *host) About(_ context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	py, err := h.interpreter(req.GetInfo())
	if err != nil {
		return nil, err
	}
	h.startProvider(req.GetInfo())
	if v := venvVersion(py); v != "" {
		return &pulumirpc.AboutResponse{Executable: py, Version: v}, nil
	}
	out, err := exec.Command(py, "-c", "import sys; print(sys.version.split()[0])").Output()
	if err != nil {
		return nil, fmt.Errorf("running %s: %w", py, err)
	}
	return &pulumirpc.AboutResponse{Executable: py, Version: strings.TrimSpace(string(out))}, nil
}

// venvVersion is the Python version a virtualenv's pyvenv.cfg records ("version = 3.11.7", or
// "version_info" from virtualenv), "" when py is not in one: no interpreter start for `About`, which
// the CLI asks for on every update.
func venvVersion(py string) string {
	data, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(py)), "pyvenv.cfg"))
	if err != nil {
		return ""
	}
	found := ""
	for _, line := range strings.Split(string(data), "\n") {
		key, value, ok := strings.Cut(line, "=")
		switch k := strings.TrimSpace(key); {
		case ok && k == "version":
			return strings.TrimSpace(value)
		case ok && k == "version_info": // 3.11.7.final.0
			if parts := strings.Split(strings.TrimSpace(value), "."); len(parts) >= 3 {
				found = strings.Join(parts[:3], ".")
			}
		}
	}
	return found
}

// Run runs the program: in a fork of the waiting provider process when there is one (runForked: the
// SDK and the project's modules are imported there already, ~0.4 s of CPU before the program's first
// resource), else in a new interpreter.
func (h *host) Run(_ context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	py, err := h.interpreter(req.GetInfo())
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	program := req.GetProgram()
	if program == "" {
		program = "."
	}
	if info := req.GetInfo(); info != nil && info.GetEntryPoint() != "" {
		program = filepath.Join(info.GetProgramDirectory(), info.GetEntryPoint())
	}
	args := []string{"-u", h.programExec, filepath.Join(h.execDir, execScript),
		"--monitor", req.GetMonitorAddress(), "--engine", h.engine,
		"--project", req.GetProject(), "--stack", req.GetStack(),
		"--parallel", strconv.Itoa(int(req.GetParallel())), "--dry_run", strconv.FormatBool(req.GetDryRun()),
		"--pwd", req.GetPwd()}
	if req.GetOrganization() != "" {
		args = append(args, "--organization", req.GetOrganization())
	}
	if info := req.GetInfo(); info != nil && info.GetRootDirectory() != "" {
		args = append(args, "--root_directory", info.GetRootDirectory())
	}
	args = append(append(args, program), req.GetArgs()...)

	config, err := json.Marshal(req.GetConfig())
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secrets, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(), "PULUMI_CONFIG="+string(config), "PULUMI_CONFIG_SECRET_KEYS="+string(secrets))
	if cliWantsDebug(os.Getppid()) {
		env = append(env, "VIRTFLEET_SDK_DEBUG=1") // see scripts/sdk_patches.py
	}
	if c := forkable(req.GetInfo(), program); c != nil {
		if code, started := runForked(c, args[1:], env, req.GetPwd()); started {
			return runResponse(code), nil
		}
	}
	cmd := exec.Command(py, args...)
	cmd.Env = env
	cmd.Dir = req.GetPwd()
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return runResponse(0), nil
	case errors.As(err, &exit):
		return runResponse(exit.ExitCode()), nil
	default:
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("starting %s: %v", py, err)}, nil
	}
}

// forkable is the waiting provider process's connection when the program may run in its fork: it
// imported the project's modules from the root directory, so only a program that is that directory (no
// Pulumi.yaml `main:` elsewhere) would import the same ones in an interpreter of its own.
func forkable(info *pulumirpc.ProgramInfo, program string) *net.UnixConn {
	if info == nil || filepath.Clean(program) != filepath.Clean(info.GetRootDirectory()) {
		return nil
	}
	return dialZygote(zygoteName(os.Getppid()))
}

// cliWantsDebug tells whether the CLI (pid) shows or logs debug messages: `--debug`, `-d` (also in a
// cluster of short flags, and a false yes from a value like `-sdev` costs only time), `-v`/`--verbose`.
// Without them the program does not send the SDK's debug messages (scripts/sdk_patches.py).
func cliWantsDebug(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return true
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	for _, a := range args[1:] {
		switch {
		case a == "--":
			return false
		case a == "--debug" || strings.HasPrefix(a, "--debug=") && a != "--debug=false":
			return true
		case a == "--verbose" || strings.HasPrefix(a, "--verbose="):
			return true
		case strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && strings.ContainsAny(a[1:], "dv"):
			return true
		}
	}
	return false
}

// runResponse is what the engine is told about a program that ended with `code` (-1: with none).
func runResponse(code int) *pulumirpc.RunResponse {
	switch code {
	case 0:
		return &pulumirpc.RunResponse{}
	case userActionableExit:
		return &pulumirpc.RunResponse{Bail: true}
	case -1:
		return &pulumirpc.RunResponse{Error: "the program ended without an exit code (killed?)"}
	default:
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program exited with non-zero exit code: %d", code)}
	}
}

func (h *host) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "provider" { // as pulumi-resource-pulumi-python: see handoff.go
		runProvider(os.Args[2:])
		return
	}
	engine := ""
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "-") && strings.Contains(a, ":") {
			engine = a
		}
	}
	self, _ := os.Executable()
	h := &host{engine: engine, execDir: os.Getenv("VIRTFLEET_LANGHOST_DIR"),
		programExec: os.Getenv("VIRTFLEET_PROGRAM_EXEC"), python: os.Getenv("VIRTFLEET_PYTHON")}
	if h.execDir == "" {
		h.execDir = filepath.Dir(self)
	}
	if h.python == "" {
		h.python = "python3"
	}
	if h.programExec == "" {
		fmt.Fprintln(os.Stderr, "pulumi-language-python: VIRTFLEET_PROGRAM_EXEC is not set (run scripts/pulumi-cli.sh)")
		os.Exit(1)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer(grpc.MaxRecvMsgSize(400 << 20))
	pulumirpc.RegisterLanguageRuntimeServer(server, h)
	fmt.Println(lis.Addr().(*net.TCPAddr).Port)
	// The engine ends a language host with SIGINT/SIGTERM: stop quietly.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() { <-sigs; os.Exit(0) }()
	if err := server.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
