// The dynamic-provider plugin's fast start: `virtfleet-langhost provider ARGS...` is what the engine runs
// as `pulumi-resource-pulumi-python`.
//
// The engine starts the provider only when the program registers its first dynamic resource, and a new
// Python process then spends ~0.4 s importing gRPC, the SDK and libvirt before it can answer.  So the
// language host starts that process early (main.go, startProvider), in `--zygote` mode: it imports
// everything, and waits on an abstract unix socket named after the user and the CLI's pid (the program
// itself starts one when there is none).  The language host's Run has it fork the program (runForked),
// and then it opens the hosts' connections.  Here the plugin connects to it, checks it runs as the
// same user, and hands over what the engine gave this process: arguments, environment, working
// directory and stdin/stdout/stderr (SCM_RIGHTS).  The waiting process becomes the provider; this one
// stays as its stand-in for the engine: the engine's SIGINT/SIGTERM are passed on as one byte each, and
// it exits when the provider's end of the socket closes.  With no waiting process (another caller, or it
// was already taken), the plugin runs the provider host directly, as before.
package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
)

// zygoteName is the abstract socket shared with scripts/pulumi_dynamic_host.py.
func zygoteName(cliPid int) string {
	return fmt.Sprintf("@virtfleet-provider-%d-%d", os.Getuid(), cliPid)
}

func runProvider(args []string) {
	if conn := dialZygote(zygoteName(os.Getppid())); conn != nil {
		os.Exit(handOff(conn, args))
	}
	py, script := os.Getenv("VIRTFLEET_PYTHON"), os.Getenv("VIRTFLEET_PROVIDER_HOST")
	if py == "" || script == "" {
		fmt.Fprintln(os.Stderr, "pulumi-resource-pulumi-python: VIRTFLEET_PYTHON/VIRTFLEET_PROVIDER_HOST not set (run scripts/pulumi-cli.sh)")
		os.Exit(1)
	}
	argv := append([]string{py, "-u", script}, args...)
	err := syscall.Exec(py, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "pulumi-resource-pulumi-python: running %s: %v\n", py, err)
	os.Exit(1)
}

// dialZygote connects to a waiting provider process of this user, or returns nil.
func dialZygote(name string) *net.UnixConn {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		return nil
	}
	raw, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || credErr != nil || int(cred.Uid) != os.Getuid() {
		c.Close() // someone else's socket under our name: never hand it anything
		return nil
	}
	return c
}

// runForked runs the program in a fork of the waiting provider process, which has imported the SDK and
// the project's modules already (scripts/provider_handoff.py, _run_program): it sends
// [4-byte length][JSON {"run": {argv, env, cwd}}] with fds 0, 1, 2 and waits.  The fork answers 'S' once
// it has taken them over, then the program's exit code as one byte.  started is false when it never
// answered 'S' (the process could not fork, or went away): nothing ran, the caller runs the program
// itself.  code is -1 when the program ended without sending one.  This host exiting (the engine's
// SIGINT) closes the socket, and the program then ends too.
func runForked(c *net.UnixConn, argv, env []string, dir string) (code int, started bool) {
	defer c.Close()
	if sendWithStdio(c, map[string]any{"run": map[string]any{"argv": argv, "env": env, "cwd": dir}}) != nil {
		return 0, false
	}
	buf := make([]byte, 1)
	if n, _ := c.Read(buf); n != 1 || buf[0] != 'S' {
		return 0, false
	}
	if n, _ := c.Read(buf); n == 1 {
		return int(buf[0]), true
	}
	return -1, true
}

// sendWithStdio sends [4-byte length][JSON body] with this process's fds 0, 1, 2 (SCM_RIGHTS).
func sendWithStdio(c *net.UnixConn, body any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	msg = append(msg, data...)
	n, _, err := c.WriteMsgUnix(msg, syscall.UnixRights(0, 1, 2), nil)
	if err == nil && n < len(msg) {
		_, err = c.Write(msg[n:])
	}
	return err
}

// handOff sends [4-byte length][JSON {argv, env, cwd}] with fds 0, 1, 2, then relays signals until the
// provider closes the socket.  Returns the provider's exit code: the byte it sends when it exits on its
// own, 0 when it closes after a relayed signal (its normal stop), else 1.
func handOff(c *net.UnixConn, args []string) int {
	// the engine may stop the plugin as soon as the provider answers: catch its signals from now on
	sigs := make(chan os.Signal, 4)
	signaled := make(chan struct{}, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	cwd, _ := os.Getwd()
	if err := sendWithStdio(c, map[string]any{"argv": args, "env": os.Environ(), "cwd": cwd}); err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-resource-pulumi-python: handing over to the waiting provider: %v\n", err)
		return 1
	}
	go func() {
		for s := range sigs {
			b := byte('I')
			if s == syscall.SIGTERM {
				b = 'T'
			}
			select {
			case signaled <- struct{}{}:
			default:
			}
			c.Write([]byte{b})
		}
	}()
	buf := make([]byte, 1)
	if n, _ := c.Read(buf); n == 1 {
		return int(buf[0])
	}
	select {
	case <-signaled:
		return 0
	default:
		return 1
	}
}
