// sluice-pod-net: a CNI plugin that gives a pod an address without touching the host.
//
// The bridge and ptp plugins put one end of a veth pair in the host's network namespace
// and turn on IP forwarding host-wide; the local cluster must leave the machine as it was.
// Here both ends of the veth pair stay in the pod's namespace: CNI_IFNAME (eth0) gets an
// address from the host-local IPAM plugin (delegated to, as the CNI spec intends), its peer
// only exists so that the link has carrier and comes up. Pods get an IP (the kubelet
// needs one to report) and no connectivity beyond their own namespace: the local
// cluster has no pod-to-pod traffic, Services or DNS. When the pod's namespace goes, both
// ends go with it, so DEL only releases the address.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ipam"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// peerName is the second end of the pair, beside CNI_IFNAME in the pod's namespace.
const peerName = "sluice-peer"

func parseConf(data []byte) (*types.NetConf, error) {
	conf := &types.NetConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, fmt.Errorf("parsing network configuration: %w", err)
	}
	if conf.IPAM.Type == "" {
		return nil, errors.New("an ipam section (e.g. host-local) is required")
	}
	return conf, nil
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return fmt.Errorf("opening netns %q: %w", args.Netns, err)
	}
	defer netns.Close()

	ipamResult, err := ipam.ExecAdd(conf.IPAM.Type, args.StdinData)
	if err != nil {
		return err
	}
	// The address goes back to the range if anything below fails.
	success := false
	defer func() {
		if !success {
			_ = ipam.ExecDel(conf.IPAM.Type, args.StdinData)
		}
	}()
	result, err := current.NewResultFromResult(ipamResult)
	if err != nil {
		return err
	}
	if len(result.IPs) == 0 {
		return errors.New("IPAM returned no address")
	}

	var iface *current.Interface
	err = netns.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: args.IfName}, PeerName: peerName}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("creating veth pair %s/%s: %w", args.IfName, peerName, err)
		}
		link, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return err
		}
		for _, ipc := range result.IPs {
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: ipc.Address.IP, Mask: ipc.Address.Mask}}
			if err := netlink.AddrAdd(link, addr); err != nil {
				return fmt.Errorf("adding %s to %s: %w", ipc.Address.String(), args.IfName, err)
			}
		}
		for _, name := range []string{peerName, args.IfName} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return fmt.Errorf("setting %s up: %w", name, err)
			}
		}
		iface = &current.Interface{
			Name:    args.IfName,
			Mac:     link.Attrs().HardwareAddr.String(),
			Sandbox: args.Netns,
		}
		return nil
	})
	if err != nil {
		return err
	}
	result.Interfaces = []*current.Interface{iface}
	for _, ipc := range result.IPs {
		ipc.Interface = current.Int(0)
	}
	// Routes and DNS stay empty: nothing is reachable from a pod but the pod itself.
	result.Routes = nil
	result.DNS = types.DNS{}
	success = true
	return types.PrintResult(result, conf.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	// The links live and die with the pod's namespace; the address is ours to release.
	// DEL must succeed when repeated or when the namespace is already gone (CNI spec).
	if args.Netns != "" {
		_ = ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
			if link, err := netlink.LinkByName(args.IfName); err == nil {
				_ = netlink.LinkDel(link)
			}
			return nil
		})
	}
	return ipam.ExecDel(conf.IPAM.Type, args.StdinData)
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if conf.RawPrevResult == nil {
		return errors.New("CHECK needs a prevResult")
	}
	if err := version.ParsePrevResult(conf); err != nil {
		return err
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return err
	}
	if err := ipam.ExecCheck(conf.IPAM.Type, args.StdinData); err != nil {
		return err
	}
	return ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		link, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("interface %s is missing: %w", args.IfName, err)
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("interface %s is down", args.IfName)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, ipc := range prev.IPs {
			found := false
			for _, a := range addrs {
				if a.IPNet.IP.Equal(ipc.Address.IP) {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("%s lacks address %s", args.IfName, ipc.Address.String())
			}
		}
		return nil
	})
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck},
		version.All, "sluice-pod-net: an address inside the pod's namespace, nothing on the host")
}
