using System.Diagnostics;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary>
/// Two machines made of this one: two network namespaces created for the test (each with its own loopback),
/// joined by a veth pair, 10.213.14.1 in the first and .2 in the second. mpirun runs in the first with a
/// hostfile naming both addresses (one slot each) and an rsh agent that enters the namespace of the address it
/// is asked for, as ssh would log into a machine, so the second rank's orted starts in the second namespace with
/// a fresh environment. Ranks talk TCP over the veth only: no shared memory, no UCX, interfaces restricted to
/// the veth subnet. Both namespaces see this file system: that is the shared checkpoint storage.
/// Deletes its namespaces on dispose, and at creation those of earlier test processes that were killed.
/// </summary>
internal sealed class TwoHosts : IDisposable
{
    private const string Prefix = "optn-";
    public const string Subnet = "10.213.14.0/30";
    public static readonly string[] Addresses = ["10.213.14.1", "10.213.14.2"];
    /// <summary>The veth ends, one in each namespace.</summary>
    public static readonly string[] Interfaces = ["veth-a", "veth-b"];
    private static int _count;

    private readonly string[] _ns;
    private readonly string _ip, _agent, _agentLog, _hostfile;
    private readonly ITestOutputHelper _output;

    /// <summary>Skips the test (fails it under OPTIMUM_REQUIRE_MPI=1) without mpirun, root or iproute2's ip, or when namespaces cannot be made.</summary>
    public static TwoHosts Create(string dir, ITestOutputHelper output)
    {
        MpiRuns.RequireMpi();
        MpiRuns.Require(Environment.IsPrivilegedProcess ? null : "the two-host test makes network namespaces, which needs root.");
        var ip = MpiRuns.Which("ip") ?? new[] { "/usr/sbin/ip", "/sbin/ip" }.FirstOrDefault(File.Exists);
        MpiRuns.Require(ip is null ? "iproute2's ip is not installed (apt-get install iproute2)." : null);
        RemoveLeftovers(ip!);
        var n = Interlocked.Increment(ref _count);
        return new TwoHosts(ip!, [$"{Prefix}{Environment.ProcessId}-{n}-a", $"{Prefix}{Environment.ProcessId}-{n}-b"], dir, output);
    }

    private TwoHosts(string ip, string[] ns, string dir, ITestOutputHelper output)
    {
        (_ip, _ns, _output) = (ip, ns, output);
        try
        {
            var (code, text) = Ip($"netns add {ns[0]}");
            // Root in a container without CAP_SYS_ADMIN: no namespaces; that is the environment's limit, not a bug here.
            if (code != 0) MpiRuns.Require($"'ip netns add' failed (exit {code}): {text.Trim()}");
            Must($"netns add {ns[1]}");
            Must($"-n {ns[0]} link add {Interfaces[0]} type veth peer name {Interfaces[1]} netns {ns[1]}");
            for (int h = 0; h < 2; h++)
            {
                Must($"-n {ns[h]} addr add {Addresses[h]}/30 dev {Interfaces[h]}");
                Must($"-n {ns[h]} link set lo up");
                Must($"-n {ns[h]} link set {Interfaces[h]} up");
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        _agentLog = Path.Combine(dir, "rsh-agent.log");
        _agent = Path.Combine(dir, "rsh-agent.sh");
        // OpenMPI calls it as `agent [options] host command...` (no options with a value) and joins nothing:
        // the command words go to a shell, as ssh does. OPTIMUM_TEST_UNSHARED names a folder the second host
        // sees empty (a tmpfs in the mount namespace ip-netns-exec makes): a machine with its own disk there.
        File.WriteAllText(_agent, $"""
            #!/bin/sh
            echo "$*" >> '{_agentLog}'
            while [ $# -gt 0 ]; do case "$1" in -*) shift;; *) break;; esac; done
            host=$1; shift
            case "$host" in
              {Addresses[0]}) ns={ns[0]};;
              {Addresses[1]}) ns={ns[1]};;
              *) echo "rsh agent: unknown host '$host'" >&2; exit 255;;
            esac
            login='exec env -i PATH="$PATH" HOME="$HOME" TERM=dumb sh -c "$*"'
            if [ "$ns" = {ns[1]} ] && [ -n "$OPTIMUM_TEST_UNSHARED" ]; then
              login='mount -t tmpfs optimum-unshared "$OPTIMUM_TEST_UNSHARED" && '"$login"
            fi
            exec {ip} netns exec "$ns" sh -c "$login" sh "$@"

            """.Replace("\r", ""));
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(_agent, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        _hostfile = Path.Combine(dir, "hostfile");
        File.WriteAllLines(_hostfile, Addresses.Select(a => $"{a} slots=1"));
    }

    /// <summary>The lines the rsh agent was called with (one per orted launched through it).</summary>
    public IReadOnlyList<string> AgentCalls => File.Exists(_agentLog) ? File.ReadAllLines(_agentLog) : [];

    /// <summary>
    /// <c>mpirun -np 2</c>, one rank per host, of <c>dotnet optimum-net.dll <paramref name="args"/></c>;
    /// <paramref name="unshared"/>: a folder the second host sees empty.
    /// </summary>
    public (int Code, string Out) Mpirun(string args, string? unshared = null, int timeoutMs = 120_000)
    {
        var mpi = $"{MpiRuns.Mpirun} --allow-run-as-root -np 2 --hostfile {_hostfile} --mca plm_rsh_agent {_agent} " +
                  $"--mca pml ob1 --mca osc ^ucx --mca btl tcp,self --mca btl_tcp_if_include {Subnet} --mca oob_tcp_if_include {Subnet}";
        var psi = new ProcessStartInfo(_ip, $"netns exec {_ns[0]} {mpi} dotnet {MpiRuns.Cli} {args}");
        if (unshared is not null) psi.Environment["OPTIMUM_TEST_UNSHARED"] = unshared;
        return MpiRuns.Exec(psi, _output, $"mpirun -np 2 --hostfile (two namespaces) optimum-net {args}", timeoutMs);
    }

    /// <summary>Bytes host <paramref name="h"/> (0 or 1) has received on its veth end.</summary>
    public long ReceivedBytes(int h) =>
        long.Parse(Must($"netns exec {_ns[h]} cat /sys/class/net/{Interfaces[h]}/statistics/rx_bytes").Trim(), System.Globalization.CultureInfo.InvariantCulture);

    public void Dispose()
    {
        foreach (var ns in _ns) Ip($"netns delete {ns}");   // takes the veth pair with it
    }

    /// <summary>Namespaces of this test whose process is gone (killed before its Dispose).</summary>
    private static void RemoveLeftovers(string ip)
    {
        var (_, list) = Run(ip, "netns list");
        foreach (var name in list.Split('\n').Select(l => l.Split(' ')[0].Trim()).Where(l => l.StartsWith(Prefix, StringComparison.Ordinal)))
        {
            var pid = name[Prefix.Length..].Split('-')[0];
            if (int.TryParse(pid, out _) && !Directory.Exists($"/proc/{pid}")) Run(ip, $"netns delete {name}");
        }
    }

    private (int Code, string Out) Ip(string args) => Run(_ip, args);

    private string Must(string args)
    {
        var (code, text) = Ip(args);
        if (code != 0) throw new InvalidOperationException($"ip {args} failed (exit {code}): {text.Trim()}");
        return text;
    }

    private static (int Code, string Out) Run(string file, string args)
    {
        var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(30_000)) { p.Kill(true); return (-1, $"timed out: {file} {args}"); }
        return (p.ExitCode, stdout + stderr.Result);
    }
}
